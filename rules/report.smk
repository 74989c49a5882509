rule report:
    """One self-contained HTML page: the verdict per label budget (headline figure, sentences, tables), the data
    and provenance, every table, figure and the exact config used."""
    input:
        unpack(report_lung_masks),
        script=script("report.py"),
        code=script_code("report.py"),
        tables=rules.tables.output,
        figures=rules.figures.output,
        pretrain_figures=rules.pretrain_figures.output,
        report_figures=rules.report_figures.output if REPORT_FIGURES else [],
        # The corpus's patch validity: what the masked methods pretrained with.
        valid_patches=at(MASKED_CORPUS, rules.patch_validity.output.figure),
        prepared_summary=rules.prepare.output.summary,
        manifest=rules.prepare.output.manifest,
        split=rules.split.output.split,
        validity_summary=at(MASKED_CORPUS, rules.patch_validity.output.summary),
        metrics=finetune_metrics,
        histories=pretrain_files("history.csv", PRETRAIN_RUNS),
        captions=sorted(
            workflow_file(f"docs/captions/{p.name}") for p in (WORKFLOW_DIR / "docs/captions").glob("*.rst")
        ),
        contrastive_figures=expand(f"{JOINT}/figures/{{name}}.png", name=CONTRASTIVE_FIGURES),
    output:
        html=f"{DATA}/report.html",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    wildcard_constraints:
        dataset=EVALUATED,
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("report", "mem_mb"),
        runtime=job_resource("report", "runtime"),
    params:
        config=lambda wildcards: as_json(view(wildcards)),
        tables_dir=folder_of("tables"),
        lung_masks=lambda wc, input: (
            f"--lung-masks-summary {input.lung_masks_summary}" if "lung_masks_summary" in input.keys() else ""
        ),
        # Wall times are a record of how the outputs were made, read when the report runs (every job it
        # summarises has finished by then), not inputs: a lost benchmark file must not rerun a pretraining.
        benchmarks=BENCH,
        # Relative to the working directory (like every path here), so a moved project does not rerun the report.
        repo=workflow_file("."),
        captions_dir=folder_of("captions"),
    shell:
        "python {input.script} --tables-dir {params.tables_dir} --figures {input.valid_patches} "
        "{input.pretrain_figures} {input.contrastive_figures} {input.report_figures} {input.figures} --config {params.config} "
        "--prepared-summary {input.prepared_summary} --manifest {input.manifest} --split {input.split} "
        "--validity-summary {input.validity_summary} {params.lung_masks} "
        "--metrics {input.metrics} --pretrain-histories {input.histories} --benchmarks-dir {params.benchmarks} "
        "--repo {params.repo} --captions-dir {params.captions_dir} --out {output.html} --log {log}"

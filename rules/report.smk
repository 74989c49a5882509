CAPTIONS_DIR = Path(workflow.basedir) / "docs" / "captions"


def report_lung_masks(wildcards):
    """The lung_masks summary when masks are predicted (mode predict / train_and_predict), else nothing."""
    return {} if LUNG_MASKS["mode"] == "provided" else {"lung_masks_summary": rules.lung_masks.output.summary}


rule report:
    """One self-contained HTML page: what the run shows (dataset, key comparisons, provenance), every table,
    figure and the exact config used."""
    input:
        unpack(report_lung_masks),
        script=script("report.py"),
        code=package_code("analysis/report.py", "analysis/summary.py", "analysis/runs.py", "analysis/tables.py",
                          "analysis/significance.py", "analysis/hyperparameters.py", "evaluation.py", "recipe.py",
                          "io.py", "config.py"),
        tables=rules.tables.output,
        figures=rules.figures.output,
        pretrain_figures=rules.pretrain_figures.output,
        valid_patches=rules.patch_validity.output.figure,
        prepared_summary=rules.prepare.output.summary,
        manifest=rules.prepare.output.manifest,
        split=rules.split.output.split,
        validity_summary=rules.patch_validity.output.summary,
        significance=f"{RESULTS}/tables/significance.csv",
        metrics=finetune_metrics(),
        histories=expand(f"{RESULTS}/pretrain/{{run}}/history.csv", run=PRETRAIN_RUNS),
        captions=sorted(str(p) for p in CAPTIONS_DIR.glob("*.rst")),
    output:
        html=f"{RESULTS}/report.html",
    params:
        config=as_json(config),
        tables_dir=f"{RESULTS}/tables",
        lung_masks=lambda wc, input: (f"--lung-masks-summary {input.lung_masks_summary}"
                                      if "lung_masks_summary" in input.keys() else ""),
        # Wall times are a record of how the outputs were made, read when the report runs (every job it
        # summarises has finished by then), not inputs: a lost benchmark file must not rerun a pretraining.
        benchmarks=BENCH,
        # Snakemake runs a cached copy of the script: the repository and captions are named here.
        repo=workflow.basedir,
        captions_dir=str(CAPTIONS_DIR),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python {input.script} --tables-dir {params.tables_dir} --figures {input.valid_patches} "
        "{input.pretrain_figures} {input.figures} --config {params.config} "
        "--prepared-summary {input.prepared_summary} --manifest {input.manifest} --split {input.split} "
        "--validity-summary {input.validity_summary} {params.lung_masks} --significance {input.significance} "
        "--metrics {input.metrics} --pretrain-histories {input.histories} --benchmarks-dir {params.benchmarks} "
        "--repo {params.repo} --captions-dir {params.captions_dir} --out {output.html} --log {log}"

# Across the evaluation datasets of an experiment (several datasets only): the summary table in the shape of MRM's
# Table 1 and its figure, and the report that opens with them and links each dataset's own report.


rule transfer:
    """One table and figure across datasets: each init's headline metric per dataset and label budget, mean ± std."""
    input:
        script=script("transfer.py"),
        code=script_code("transfer.py"),
        metrics=[metrics for name in PLAN.evaluated for metrics in dataset_metrics(name)],
    output:
        csv=f"{EXPERIMENT}/tables/transfer.csv",
        markdown=f"{EXPERIMENT}/tables/transfer.md",
        figure=report(f"{EXPERIMENT}/figures/transfer.png", caption="../docs/captions/transfer.rst", category="Summary"),
    log:
        f"{EXPERIMENT}/logs/transfer.log",
    benchmark:
        f"{EXPERIMENT}/benchmarks/transfer.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("tables", "mem_mb"),
        runtime=job_resource("tables", "runtime"),
    params:
        settings=as_json(config["plots"]),
        variant=" ".join(PLAN.first_variant()),
        mask_ratio=config["pretrain"]["mask_ratio"],
        datasets=" ".join(f"--dataset {name} {' '.join(dataset_metrics(name))}" for name in PLAN.evaluated),
        out_dir=lambda wildcards, output: str(Path(output.csv).parent.parent),
    shell:
        "python {input.script} {params.datasets} --settings {params.settings} --variant {params.variant} "
        "--mask-ratio {params.mask_ratio} --out-dir {params.out_dir} --log {log}"


rule experiment_report:
    """The experiment's page: the summary across datasets first, then one section per evaluation dataset."""
    input:
        script=script("experiment_report.py"),
        code=script_code("experiment_report.py"),
        transfer_csv=rules.transfer.output.csv,
        transfer_md=rules.transfer.output.markdown,
        transfer_png=rules.transfer.output.figure,
        verdicts=[f"results/{name}/tables/verdict.md" for name in PLAN.evaluated],
        headlines=[f"results/{name}/figures/accuracy_by_budget.png" for name in PLAN.evaluated],
        reports=dataset_reports(),
        captions=workflow_file("docs/captions/transfer.rst"),
    output:
        html=f"{EXPERIMENT}/report.html",
    log:
        f"{EXPERIMENT}/logs/experiment_report.log",
    benchmark:
        f"{EXPERIMENT}/benchmarks/experiment_report.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("report", "mem_mb"),
        runtime=job_resource("report", "runtime"),
    params:
        config=as_json(PLAN.experiment.section),
        corpus=MASKED_CORPUS,
        datasets=" ".join(
            f"--dataset {name} results/{name}/tables/verdict.md results/{name}/figures/accuracy_by_budget.png "
            f"results/{name}/report.html"
            for name in PLAN.evaluated
        ),
        captions_dir=folder_of("captions"),
    shell:
        "python {input.script} --transfer-csv {input.transfer_csv} --transfer-md {input.transfer_md} "
        "--transfer-png {input.transfer_png} {params.datasets} --corpus {params.corpus} --config {params.config} "
        "--captions-dir {params.captions_dir} --out {output.html} --log {log}"

rule tables:
    """The verdict per label budget, the paper's Tables 1-3 and the significance table (hierarchical bootstrap), as
    CSV and Markdown."""
    input:
        script=script("tables.py"),
        code=script_code("tables.py"),
        metrics=finetune_metrics,
        histories=pretrain_files("history.csv", PRETRAIN_RUNS),
    output:
        csv=[
            report(f"{DATA}/tables/{name}.csv", caption=f"../docs/captions/{name}.rst", category="Tables")
            for name in TABLES
        ],
        markdown=expand(f"{DATA}/tables/{{table}}.md", table=TABLES, allow_missing=True),
        study_significance=f"{DATA}/tables/study_significance.csv",
        intervals=f"{DATA}/tables/accuracy_intervals.csv",
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    wildcard_constraints:
        dataset=EVALUATED,
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("tables", "mem_mb"),
        runtime=job_resource("tables", "runtime"),
    params:
        settings=as_json(config["tables"]),
        # Table 1 reports the hyper-parameters actually used.
        used=lambda wildcards: as_json(
            {
                k: view(wildcards)[k]
                for k in ("encoders", "pretrain", "finetune", "patch_validity", "prepare", "label_fractions", "split")
            }
        ),
        out_dir=folder_of("csv", "output"),
    shell:
        "python {input.script} --metrics {input.metrics} --pretrain-histories {input.histories} "
        "--settings {params.settings} --config {params.used} "
        "--out-dir {params.out_dir} --log {log}"

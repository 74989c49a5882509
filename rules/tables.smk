rule tables:
    """The paper's Tables 1-3 and the significance table (hierarchical bootstrap), as CSV and Markdown."""
    input:
        script=script("tables.py"),
        code=package_code("analysis/tables.py", "analysis/runs.py", "analysis/hyperparameters.py",
                          "analysis/significance.py", "evaluation.py", "recipe.py", "io.py"),
        metrics=finetune_metrics(),
        histories=expand(f"{RESULTS}/pretrain/{{run}}/history.csv", run=PRETRAIN_RUNS),
    output:
        expand(f"{RESULTS}/tables/{{table}}.{{ext}}", table=TABLES, ext=["csv", "md"]),
    params:
        settings=as_json(config["tables"]),
        # Table 1 reports the hyper-parameters actually used.
        used=as_json({k: config[k] for k in ("encoders", "pretrain", "finetune", "patch_validity", "prepare",
                                             "label_fractions", "split")}),
        out_dir=f"{RESULTS}/tables",
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python {input.script} --metrics {input.metrics} --pretrain-histories {input.histories} "
        "--settings {params.settings} --config {params.used} --out-dir {params.out_dir} --log {log}"

rule tables:
    """The paper's Tables 1-3 and the paired-bootstrap significance table, as CSV and Markdown."""
    input:
        script=script("tables.py"),
        code=package_code("analysis/tables.py", "analysis/runs.py", "evaluation.py", "recipe.py", "inits.py"),
        metrics=finetune_metrics(),
    output:
        expand(f"{RESULTS}/tables/{{table}}.{{ext}}", table=TABLES, ext=["csv", "md"]),
    params:
        settings=as_json(config["tables"]),
        # Table 1 reports the hyper-parameters actually used.
        used=as_json({k: config[k] for k in ("encoders", "pretrain", "finetune", "patch_validity", "prepare")}),
        out_dir=f"{RESULTS}/tables",
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python {input.script} --metrics {input.metrics} --settings {params.settings} --config {params.used} "
        "--out-dir {params.out_dir} --log {log}"

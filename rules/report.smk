rule report:
    """One self-contained HTML page with every table, figure and the exact config used."""
    input:
        script=script("report.py"),
        code=package_code("analysis/report.py"),
        tables=rules.tables.output,
        figures=rules.figures.output,
        pretrain_figures=rules.pretrain_figures.output,
        report_figures=rules.report_figures.output if REPORT_FIGURES else [],
        valid_patches=rules.patch_validity.output.figure,
    output:
        html=f"{RESULTS}/report.html",
    params:
        config=as_json(config),
        tables_dir=f"{RESULTS}/tables",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python {input.script} --tables-dir {params.tables_dir} --figures {input.valid_patches} "
        "{input.pretrain_figures} {input.report_figures} {input.figures} --config {params.config} --out {output.html} --log {log}"

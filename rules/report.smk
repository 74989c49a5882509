rule report:
    """One self-contained HTML page with every table, figure and the exact config used."""
    input:
        script=script("report.py"),
        code=script_code("report.py"),
        tables=rules.tables.output,
        figures=rules.figures.output,
        pretrain_figures=rules.pretrain_figures.output,
        valid_patches=rules.patch_validity.output.figure,
    output:
        html=f"{RESULTS}/report.html",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("report", "mem_mb"),
        runtime=job_resource("report", "runtime"),
    params:
        config=as_json(config),
        tables_dir=folder_of("tables"),
    shell:
        "python {input.script} --tables-dir {params.tables_dir} --figures {input.valid_patches} "
        "{input.pretrain_figures} {input.figures} --config {params.config} --out {output.html} --log {log}"

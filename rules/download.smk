rule download:
    """Generate the phantoms, or fetch / extract / locate the configured real dataset."""
    input:
        script=script("download.py"),
        code=package_code("data/acquire.py", "data/synthetic.py", "data/archive.py"),
    output:
        marker=f"{RESULTS}/download/source.json",
    params:
        dataset=as_json(config["dataset"]),
        raw_dir=f"{RESOURCES_DIR}/raw",
    threads: config["prepare"].get("workers", 1)
    log:
        f"{LOGS}/download.log",
    benchmark:
        f"{BENCH}/download.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python {input.script} --dataset {params.dataset} --raw-dir {params.raw_dir} "
        "--marker {output.marker} --workers {threads} --log {log}"

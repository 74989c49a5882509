rule prepare:
    """Normalise every image and mask onto one grid in a memory-mappable uint8 cache."""
    input:
        script=script("prepare.py"),
        code=package_code("data/prepare.py", "data/readers.py", "data/sources.py", "text/reports.py"),
        marker=rules.download.output.marker,
    output:
        images=f"{RESULTS}/prepared/images.npy",
        masks=f"{RESULTS}/prepared/masks.npy",
        manifest=f"{RESULTS}/prepared/manifest.csv",
        summary=f"{RESULTS}/prepared/summary.json",
        reports=f"{RESULTS}/prepared/reports.jsonl",
    params:
        settings=as_json(config["prepare"]),
        # The reading side of the dataset section (name, labels, views) decides the cache's content too.
        dataset=as_json(config["dataset"]),
        out_dir=f"{RESULTS}/prepared",
    threads: config["prepare"].get("workers", 1)
    log:
        f"{LOGS}/prepare.log",
    benchmark:
        f"{BENCH}/prepare.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python {input.script} --marker {input.marker} --dataset {params.dataset} "
        "--settings {params.settings} --out-dir {params.out_dir} --log {log}"

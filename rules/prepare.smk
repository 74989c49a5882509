rule prepare:
    """Normalise every image and mask onto one grid in a memory-mappable uint8 cache."""
    input:
        script=script("prepare.py"),
        code=script_code("prepare.py"),
        marker=rules.download.output.marker,
    output:
        images=f"{DATA}/prepared/images.npy",
        masks=f"{DATA}/prepared/masks.npy",
        manifest=f"{DATA}/prepared/manifest.csv",
        labels=f"{DATA}/prepared/labels.npy",
        summary=f"{DATA}/prepared/summary.json",
        reports=f"{DATA}/prepared/reports.jsonl",
        # Every kind: a (0,) uint8 array where the kind has no lesion masks (cxrmim.data.cache.CacheWriter).
        lesion_masks=f"{DATA}/prepared/lesion_masks.npy",
    log:
        f"{LOGS}/prepare.log",
    benchmark:
        f"{BENCH}/prepare.tsv"
    conda:
        "../envs/data.yaml"
    threads: config["prepare"].get("workers", 1)
    resources:
        mem_mb=job_resource("prepare", "mem_mb"),
        runtime=job_resource("prepare", "runtime"),
    params:
        settings=as_json(config["prepare"]),
        # The reading side of the dataset section (name, labels, views) decides the cache's content too.
        dataset=lambda wildcards: as_json(dataset_params(view(wildcards)["dataset"])),
        out_dir=folder_of("images", "output"),
    shell:
        "python {input.script} --marker {input.marker} --dataset {params.dataset} "
        "--settings {params.settings} --out-dir {params.out_dir} --log {log}"

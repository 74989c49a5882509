from cxrmim.data.fingerprint import dataset_fingerprint, dataset_input_files
from cxrmim.data.source_check import check_source, dataset_params

# A layout mistake fails here, before any job has removed the outputs of the last good run.
for name in PLAN.datasets:
    check_source(PLAN.view(name)["dataset"], at(name, f"{DATA}/download/source.json"))


rule download:
    """Generate the phantoms, or fetch / extract / locate the configured real dataset."""
    input:
        script=script("download.py"),
        code=script_code("download.py"),
        # Ancient: the fingerprint param below holds the manifest's bytes, so restoring a file after a mistake
        # (same bytes, newer mtime) reruns nothing, while any real edit still does.
        data=lambda wildcards: [ancient(f) for f in dataset_input_files(view(wildcards)["dataset"])],
    output:
        marker=f"{DATA}/download/source.json",
    log:
        f"{LOGS}/download.log",
    benchmark:
        f"{BENCH}/download.tsv"
    conda:
        "../envs/data.yaml"
    threads: config["prepare"].get("workers", 1)
    resources:
        mem_mb=job_resource("download", "mem_mb"),
        runtime=job_resource("download", "runtime"),
    params:
        dataset=lambda wildcards: as_json(dataset_params(view(wildcards)["dataset"])),
        raw_dir="resources/{dataset}/raw",
        # Size and mtime of every listed image and mask: a fixed image or mask reruns download, then prepare.
        fingerprint=lambda wildcards: dataset_fingerprint(view(wildcards)["dataset"]),
    shell:
        "python {input.script} --dataset {params.dataset} --raw-dir {params.raw_dir} "
        "--marker {output.marker} --workers {threads} --log {log}"

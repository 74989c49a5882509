# Lung masks for datasets without them: train a segmenter (optional), predict, clean and QC the masks.
# With lung_masks.mode: provided (the default) nothing here is in the DAG; patch_validity reads prepared masks.
from pathlib import Path

LUNG_MASKS = config["lung_masks"]
LUNG_MASK_DIR = f"{RESULTS}/lung_masks"
# Keys that only shape prediction, QC or the job: changing them must not retrain the segmenter.
NOT_TRAINING_KEYS = ("mode", "weights", "dilation", "qc_policy", "prefer_provided", "resources")
# Keys prediction depends on (architecture keys matter only for weights without cxrmim metadata).
PREDICT_KEYS = ("image_size", "encoder", "decoder_channels", "batch_size", "dilation", "qc", "qc_policy",
                "prefer_provided", "device")


def segmenter_weights(wildcards=None):
    """The segmentation weights lung_masks uses: trained in this run, or the file lung_masks.weights names."""
    if LUNG_MASKS["mode"] == "train_and_predict":
        return f"{LUNG_MASK_DIR}/segmenter.safetensors"
    if not LUNG_MASKS.get("weights"):
        raise ValueError("lung_masks.mode is 'predict' but lung_masks.weights is empty; set it to a segmenter "
                         ".safetensors (e.g. results/<other>/lung_masks/segmenter.safetensors), or use "
                         "mode: train_and_predict")
    return LUNG_MASKS["weights"]


def segmenter_source_files(wildcards):
    """Manifest CSVs among the train sources, so editing one retrains the segmenter."""
    return [s["source"] for s in LUNG_MASKS.get("train_sources") or [] if s.get("source") and Path(s["source"]).is_file()]


def patch_validity_masks(wildcards):
    """Masks patch_validity reads: the prepared ones (mode provided) or the predicted ones and their QC decisions."""
    if LUNG_MASKS["mode"] == "provided":
        return {"masks": rules.prepare.output.masks}
    return {"masks": rules.lung_masks.output.masks, "mask_status": rules.lung_masks.output.qc}


def patch_validity_mask_args(wildcards, input):
    """The optional --masks/--mask-status arguments of scripts/patch_validity.py."""
    if "mask_status" not in input.keys():
        return ""
    return f"--masks {input.masks} --mask-status {input.mask_status}"


if LUNG_MASKS["mode"] == "predict":
    segmenter_weights()  # fail at DAG construction, not inside a job, when the weights are not configured


rule train_segmenter:
    """Train the lung segmenter on the mask-bearing train sources; Dice and IoU on a held-out part."""
    input:
        script=script("train_segmenter.py"),
        code=package_code("segment"),
        sources=segmenter_source_files,
    output:
        weights=f"{LUNG_MASK_DIR}/segmenter.safetensors",
        quality=f"{LUNG_MASK_DIR}/segmenter_quality.json",
        figure=report(
            f"{RESULTS}/figures/lung_segmenter_holdout.png",
            caption="../docs/captions/lung_segmenter_holdout.rst",
            category="Data",
        ),
    params:
        settings=as_json(section("lung_masks", drop=NOT_TRAINING_KEYS)),
    threads: LUNG_MASKS["resources"]["cpus"]
    resources:
        gpu=LUNG_MASKS["resources"]["gpu"],
        mem_mb=LUNG_MASKS["resources"]["mem_mb"],
        runtime=LUNG_MASKS["resources"]["runtime"],
    log:
        f"{LOGS}/train_segmenter.log",
    benchmark:
        f"{BENCH}/train_segmenter.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --settings {params.settings} --weights {output.weights} "
        "--quality {output.quality} --figure {output.figure} --log {log}"


rule lung_masks:
    """Predict a lung mask for every prepared image, keep two components, fill holes, flag implausible masks."""
    input:
        script=script("lung_masks.py"),
        code=package_code("segment"),
        images=rules.prepare.output.images,
        manifest=rules.prepare.output.manifest,
        weights=segmenter_weights,
    output:
        masks=f"{LUNG_MASK_DIR}/masks.npy",
        qc=f"{LUNG_MASK_DIR}/qc.csv",
        summary=f"{LUNG_MASK_DIR}/summary.json",
        figure=report(
            f"{RESULTS}/figures/lung_mask_qc.png",
            caption="../docs/captions/lung_mask_qc.rst",
            category="Data",
        ),
    params:
        settings=as_json({k: v for k, v in LUNG_MASKS.items() if k in PREDICT_KEYS}),
        prepared=f"{RESULTS}/prepared",
        out_dir=LUNG_MASK_DIR,
    threads: LUNG_MASKS["resources"]["cpus"]
    resources:
        gpu=LUNG_MASKS["resources"]["gpu"],
        mem_mb=LUNG_MASKS["resources"]["mem_mb"],
        runtime=LUNG_MASKS["resources"]["runtime"],
    log:
        f"{LOGS}/lung_masks.log",
    benchmark:
        f"{BENCH}/lung_masks.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --prepared {params.prepared} --weights {input.weights} "
        "--settings {params.settings} --out-dir {params.out_dir} --figure {output.figure} --log {log}"

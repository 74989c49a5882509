# Lung masks for datasets without them: train a segmenter (optional), predict, clean and QC the masks.
# With lung_masks.mode: provided (the default) nothing here is in the DAG; patch_validity reads prepared masks.
# Its helper functions live in common.smk (Snakemake's lint wants rules and functions apart).

# Keys that only shape prediction, QC or the job: changing them must not retrain the segmenter.
NOT_TRAINING_KEYS = ("mode", "weights", "dilation", "qc_policy", "prefer_provided", "resources")
# Keys prediction depends on (architecture keys matter only for weights without cxrmim metadata).
PREDICT_KEYS = (
    "image_size",
    "encoder",
    "decoder_channels",
    "batch_size",
    "dilation",
    "qc",
    "qc_policy",
    "prefer_provided",
    "device",
)


rule train_segmenter:
    """Train the lung segmenter on the mask-bearing train sources; Dice and IoU on a held-out part."""
    input:
        script=script("train_segmenter.py"),
        code=script_code("train_segmenter.py"),
        sources=segmenter_source_files,
    output:
        weights=f"{LUNG_MASK_DIR}/segmenter.safetensors",
        quality=f"{LUNG_MASK_DIR}/segmenter_quality.json",
        figure=report(
            f"{DATA}/figures/lung_segmenter_holdout.png",
            caption="../docs/captions/lung_segmenter_holdout.rst",
            category="Data",
        ),
    log:
        f"{LOGS}/train_segmenter.log",
    benchmark:
        f"{BENCH}/train_segmenter.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["lung_masks"]["resources"]["cpus"]
    resources:
        gpu=config["lung_masks"]["resources"]["gpu"],
        mem_mb=grows(config["lung_masks"]["resources"]["mem_mb"]),
        runtime=grows(config["lung_masks"]["resources"]["runtime"]),
    params:
        settings=lambda wildcards: as_json(
            {k: v for k, v in lung_masks(wildcards).items() if k not in NOT_TRAINING_KEYS}
        ),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --settings {params.settings} --weights {output.weights} "
        "--quality {output.quality} --figure {output.figure} --log {log}"


rule lung_masks:
    """Predict a lung mask for every prepared image, keep two components, fill holes, flag implausible masks."""
    input:
        script=script("lung_masks.py"),
        code=script_code("lung_masks.py"),
        images=rules.prepare.output.images,
        manifest=rules.prepare.output.manifest,
        weights=segmenter_weights,
    output:
        masks=f"{LUNG_MASK_DIR}/masks.npy",
        qc=f"{LUNG_MASK_DIR}/qc.csv",
        summary=f"{LUNG_MASK_DIR}/summary.json",
        figure=report(
            f"{DATA}/figures/lung_mask_qc.png",
            caption="../docs/captions/lung_mask_qc.rst",
            category="Data",
        ),
    log:
        f"{LOGS}/lung_masks.log",
    benchmark:
        f"{BENCH}/lung_masks.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config["lung_masks"]["resources"]["cpus"]
    resources:
        gpu=config["lung_masks"]["resources"]["gpu"],
        mem_mb=data_mem("lung_masks", config["lung_masks"]["resources"]["mem_mb"]),
        runtime=grows(config["lung_masks"]["resources"]["runtime"]),
    params:
        settings=lambda wildcards: as_json({k: v for k, v in lung_masks(wildcards).items() if k in PREDICT_KEYS}),
        prepared=folder_of("images"),
        out_dir=folder_of("masks", "output"),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --prepared {params.prepared} --weights {input.weights} "
        "--settings {params.settings} --out-dir {params.out_dir} --figure {output.figure} --log {log}"

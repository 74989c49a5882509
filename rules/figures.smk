rule figures:
    """The verdict's headline figure and comparisons heatmap, accuracy/AUC vs label fraction, accuracy vs epoch
    (Fig. 3), vs masking ratio, confusion matrices."""
    input:
        unpack(segmentation_figure_inputs),
        script=script("figures.py"),
        code=script_code("figures.py"),
        metrics=finetune_metrics,
        intervals=rules.tables.output.intervals,
        significance=f"{DATA}/tables/significance.csv",
    output:
        figures=[
            report(f"{DATA}/figures/{name}.png", caption=f"../docs/captions/{name}.rst", category="Fine-tuning")
            for name in RESULT_FIGURES
        ],
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCH}/figures.tsv"
    wildcard_constraints:
        dataset=EVALUATED,
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("figures", "mem_mb"),
        runtime=job_resource("figures", "runtime"),
    params:
        settings=as_json(config["plots"]),
        variant=" ".join(PLAN.first_variant()),
        out_dir=folder_of("figures", "output"),
        # Segmentation datasets: the prepared images and masks under the worst predictions (empty otherwise).
        prepared=lambda wildcards, input: f"--prepared {Path(input.images).parent}" if "images" in input.keys() else "",
    shell:
        "python {input.script} --metrics {input.metrics} --settings {params.settings} --variant {params.variant} "
        "--intervals {input.intervals} --significance {input.significance} {params.prepared} "
        "--out-dir {params.out_dir} --log {log}"


rule pretrain_figures:
    """Fig. 1 (random vs region-guided masking), reconstructions, and pretraining loss curves."""
    input:
        script=script("pretrain_figures.py"),
        code=script_code("pretrain_figures.py"),
        images=at(MASKED_CORPUS, rules.prepare.output.images),
        split=at(MASKED_CORPUS, rules.split.output.split),
        validity=at(MASKED_CORPUS, rules.patch_validity.output.validity),
        autoencoders=pretrain_files("autoencoder.safetensors", PRETRAIN_RUNS),
    output:
        figures=[
            report(f"{CORPUS}/figures/{name}.png", caption=f"../docs/captions/{name}.rst", category="Pretraining")
            for name in PRETRAIN_FIGURES
        ],
    log:
        f"{CORPUS}/logs/pretrain_figures.log",
    benchmark:
        f"{CORPUS}/benchmarks/pretrain_figures.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("pretrain_figures", "mem_mb"),
        runtime=job_resource("pretrain_figures", "runtime"),
    params:
        settings=as_json(config["plots"]),
        mask_ratio=config["pretrain"]["mask_ratio"],
        runs=lambda wildcards, input: [str(Path(path).parent) for path in input.autoencoders],
        prepared=folder_of("images"),
        out_dir=folder_of("figures", "output"),
    shell:
        "python {input.script} --prepared {params.prepared} --split {input.split} --validity {input.validity} "
        "--runs {params.runs} --mask-ratio {params.mask_ratio} --settings {params.settings} "
        "--out-dir {params.out_dir} --log {log}"

CONTRASTIVE_RUN = f"{RESULTS}/pretrain/{{method}}_{{encoder}}_s{{pseed}}"


rule contrastive_pretrain:
    """SimSiam or BYOL pretraining of one (method, backbone, pretraining seed); resumes from its checkpoint."""
    input:
        script=script("contrastive_pretrain.py"),
        code=package_code("train/contrastive.py", "train/loop.py", "train/checkpoint.py", "train/distributed.py",
                          "train/pretrain_data.py", "train/common.py", "models/encoders.py", "models/siamese.py",
                          "data/views.py", "data/tensors.py", "data/patches.py", "device.py", "inits.py", "recipe.py"),
        images=rules.prepare.output.images,
        split=rules.split.output.split,
        validity=rules.patch_validity.output.validity,
    output:
        encoder=f"{CONTRASTIVE_RUN}/encoder.safetensors",
        history=f"{CONTRASTIVE_RUN}/history.csv",
    params:
        # Only this method's block: tuning BYOL never reruns SimSiam.
        settings=lambda wc: as_json(CONTRASTIVE[wc.method]),
        encoder=lambda wc: as_json(config["encoders"][wc.encoder]),
        prepared=f"{RESULTS}/prepared",
        out_dir=lambda wc: f"{RESULTS}/pretrain/{wc.method}_{wc.encoder}_s{wc.pseed}",
    wildcard_constraints:
        method="|".join(CONTRASTIVE_METHODS),
        encoder=r"[A-Za-z0-9][A-Za-z0-9-]*",
        pseed=r"\d+",
    threads: CONTRASTIVE.get("resources", {}).get("cpus", 1)
    resources:
        gpu=CONTRASTIVE.get("resources", {}).get("gpu", 0),
        mem_mb=CONTRASTIVE.get("resources", {}).get("mem_mb", 4000),
        runtime=CONTRASTIVE.get("resources", {}).get("runtime", 60),
    log:
        f"{LOGS}/pretrain/{{method}}_{{encoder}}_s{{pseed}}.log",
    benchmark:
        f"{BENCH}/pretrain/{{method}}_{{encoder}}_s{{pseed}}.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --prepared {params.prepared} --split {input.split} "
        "--validity {input.validity} --method {wildcards.method} --seed {wildcards.pseed} "
        "--encoder {params.encoder} --settings {params.settings} --out {params.out_dir} --log-file {log}"


rule contrastive_figures:
    """Loss and embedding spread (the collapse check) per epoch of every SimSiam / BYOL run."""
    input:
        script=script("contrastive_figures.py"),
        code=package_code("analysis/contrastive_figures.py"),
        histories=expand(f"{RESULTS}/pretrain/{{run}}/history.csv", run=CONTRASTIVE_RUNS),
    output:
        [
            report(f"{RESULTS}/figures/{name}.png", caption=f"../docs/captions/{name}.rst", category="Pretraining")
            for name in CONTRASTIVE_FIGURES
        ],
    params:
        settings=as_json(config["plots"]),
    log:
        f"{LOGS}/contrastive_figures.log",
    benchmark:
        f"{BENCH}/contrastive_figures.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python {input.script} --histories {input.histories} --settings {params.settings} --out {output} --log {log}"

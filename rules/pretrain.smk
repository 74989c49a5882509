PRETRAIN_CHOICE_KEYS = ("methods", "mask_ratio", "mask_ratios", "encoder", "seeds", "resources")


rule pretrain:
    """Masked-autoencoder pretraining of one (method, masking ratio, encoder); resumes from its checkpoint."""
    input:
        script=script("pretrain.py"),
        code=package_code("train/pretrain.py", "train/common.py", "models", "data/tensors.py", "data/patches.py", "device.py"),
        images=rules.prepare.output.images,
        split=rules.split.output.split,
        validity=rules.patch_validity.output.validity,
    output:
        encoder=f"{RESULTS}/pretrain/{{method}}_r{{ratio}}_{{encoder}}_s{{pseed}}/encoder.safetensors",
        autoencoder=f"{RESULTS}/pretrain/{{method}}_r{{ratio}}_{{encoder}}_s{{pseed}}/autoencoder.safetensors",
        history=f"{RESULTS}/pretrain/{{method}}_r{{ratio}}_{{encoder}}_s{{pseed}}/history.csv",
    params:
        settings=as_json(section("pretrain", drop=PRETRAIN_CHOICE_KEYS)),
        encoder=lambda wc: as_json(config["encoders"][wc.encoder]),
        prepared=f"{RESULTS}/prepared",
        out_dir=lambda wc: f"{RESULTS}/pretrain/{wc.method}_r{wc.ratio}_{wc.encoder}_s{wc.pseed}",
    wildcard_constraints:
        method="|".join(MASKED_METHODS),
        ratio=r"[0-9.]+",
        encoder=r"[A-Za-z0-9][A-Za-z0-9-]*",
        pseed=r"\d+",
    threads: config["pretrain"]["resources"]["cpus"]
    resources:
        gpu=config["pretrain"]["resources"]["gpu"],
        mem_mb=config["pretrain"]["resources"]["mem_mb"],
        runtime=config["pretrain"]["resources"]["runtime"],
    log:
        f"{LOGS}/pretrain/{{method}}_r{{ratio}}_{{encoder}}_s{{pseed}}.log",
    benchmark:
        f"{BENCH}/pretrain/{{method}}_r{{ratio}}_{{encoder}}_s{{pseed}}.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --prepared {params.prepared} --split {input.split} "
        "--validity {input.validity} --method {wildcards.method} --mask-ratio {wildcards.ratio} --seed {wildcards.pseed} "
        "--encoder {params.encoder} --settings {params.settings} --out {params.out_dir} --log {log}"

PRETRAIN_CHOICE_KEYS = ("methods", "mask_ratio", "mask_ratios", "encoder", "seeds", "resources")
METHOD_SECTIONS = {"mrm": "mrm", "mrm-noreport": "mrm", "mrm-nosr": "mrm", "medim": "medim"}  # method -> its own section


def pretrain_settings(method):
    """The `pretrain:` section for one method: the shared keys plus only that method's own subsection."""
    own = METHOD_SECTIONS.get(method)
    drop = PRETRAIN_CHOICE_KEYS + tuple(s for s in set(METHOD_SECTIONS.values()) if s != own)
    return section("pretrain", drop=drop)


def report_inputs(wildcards):
    """The tokenizer (and the reports next to the cache) for the methods that read reports."""
    if wildcards.method not in REPORT_METHODS:
        return {}
    inputs = {"tokenizer": rules.tokenizer.output.tokenizer, "reports": rules.prepare.output.reports}
    if config["text"].get("keywords"):
        inputs["keywords"] = config["text"]["keywords"]
    return inputs


def report_args(wildcards, input):
    """The report methods' extra command-line arguments."""
    if wildcards.method not in REPORT_METHODS:
        return ""
    return f"--tokenizer {input.tokenizer} --text {as_json(config['text'])}"


rule pretrain:
    """Masked-autoencoder pretraining of one (method, masking ratio, encoder); resumes from its checkpoint."""
    input:
        unpack(report_inputs),
        script=script("pretrain.py"),
        code=package_code(
            *(f"train/{m}.py" for m in ("pretrain", "loop", "checkpoint", "distributed", "pretrain_data", "common",
                                        "mrm", "medim", "report_methods", "report_pretrain")),
            "models", "text", "data/tensors.py", "data/patches.py", "device.py", "inits.py",
        ),
        images=rules.prepare.output.images,
        split=rules.split.output.split,
        validity=rules.patch_validity.output.validity,
    output:
        encoder=f"{RESULTS}/pretrain/{{method}}_r{{ratio}}_{{encoder}}_s{{pseed}}/encoder.safetensors",
        autoencoder=f"{RESULTS}/pretrain/{{method}}_r{{ratio}}_{{encoder}}_s{{pseed}}/autoencoder.safetensors",
        history=f"{RESULTS}/pretrain/{{method}}_r{{ratio}}_{{encoder}}_s{{pseed}}/history.csv",
    params:
        settings=lambda wc: as_json(pretrain_settings(wc.method)),
        report_args=report_args,
        encoder=lambda wc: as_json(config["encoders"][wc.encoder]),
        prepared=f"{RESULTS}/prepared",
        out_dir=lambda wc: f"{RESULTS}/pretrain/{wc.method}_r{wc.ratio}_{wc.encoder}_s{wc.pseed}",
    wildcard_constraints:
        method="|".join(PRETRAIN_METHODS),
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
        "--encoder {params.encoder} --settings {params.settings} --out {params.out_dir} {params.report_args} --log {log}"

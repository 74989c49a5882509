# `pretrain:` keys that only choose which jobs exist (or where they run): changing them reruns no pretraining.
PRETRAIN_CHOICE_KEYS = ("methods", "mask_ratio", "mask_ratios", "encoder", "seeds", "resources")
PRETRAIN_RUN = "{method}_r{ratio}_{encoder}_s{pseed}"  # a run folder's name (cxrmim.inits.pretrain_run_name)


rule pretrain:
    """Masked-autoencoder pretraining of one (method, masking ratio, encoder); resumes from its checkpoint."""
    input:
        unpack(report_inputs),
        script=script("pretrain.py"),
        code=script_code("pretrain.py"),
        images=at(MASKED_CORPUS, rules.prepare.output.images),
        split=at(MASKED_CORPUS, rules.split.output.split),
        validity=at(MASKED_CORPUS, rules.patch_validity.output.validity),
    output:
        # The files of its methods' run folders (cxrmim.registry, Method.output_files), incl. the timm folder.
        **run_outputs(MASKED_METHODS, f"{CORPUS}/pretrain/{PRETRAIN_RUN}"),
    log:
        f"{CORPUS}/logs/pretrain/{PRETRAIN_RUN}.log",
    benchmark:
        f"{CORPUS}/benchmarks/pretrain/{PRETRAIN_RUN}.tsv"
    wildcard_constraints:
        method="|".join(MASKED_METHODS),
        ratio=r"[0-9.]+",
        encoder=r"[A-Za-z0-9][A-Za-z0-9-]*",
        pseed=r"\d+",
    conda:
        "../envs/torch.yaml"
    threads: config["pretrain"]["resources"]["cpus"]
    resources:
        gpu=config["pretrain"]["resources"]["gpu"],
        mem_mb=data_mem("pretrain", config["pretrain"]["resources"]["mem_mb"], MASKED_CORPUS),
        runtime=grows(config["pretrain"]["resources"]["runtime"]),
    params:
        settings=lambda wc: as_json(pretrain_settings(wc.method)),
        report_args=report_args,
        encoder=lambda wc: as_json(config["encoders"][wc.encoder]),
        prepared=folder_of("images"),
        launch=launcher,
        out_dir=folder_of("encoder", "output"),
    shell:
        "OMP_NUM_THREADS={threads} {params.launch} {input.script} --prepared {params.prepared} --split {input.split} "
        "--validity {input.validity} --method {wildcards.method} --mask-ratio {wildcards.ratio} --seed {wildcards.pseed} "
        "--encoder {params.encoder} --settings {params.settings} --out {params.out_dir} {params.report_args} "
        "--log-file {log}"

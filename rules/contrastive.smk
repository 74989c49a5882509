CONTRASTIVE_RUN = "{method}_{encoder}_s{pseed}"  # a run folder's name (cxrmim.inits.pretrain_run_name)


rule contrastive_pretrain:
    """SimSiam, BYOL, SKD or Cross pretraining of one (method, backbone, pretraining seed); resumes its checkpoint."""
    input:
        script=script("contrastive_pretrain.py"),
        code=script_code("contrastive_pretrain.py"),
        images=at(JOINT_CORPUS, rules.prepare.output.images),
        split=at(JOINT_CORPUS, rules.split.output.split),
        validity=at(JOINT_CORPUS, rules.patch_validity.output.validity),
    output:
        # The files of its methods' run folders (cxrmim.registry, Method.output_files), incl. the timm folder.
        **run_outputs(JOINT_METHODS, f"{JOINT}/pretrain/{CONTRASTIVE_RUN}"),
    log:
        f"{JOINT}/logs/pretrain/{CONTRASTIVE_RUN}.log",
    benchmark:
        f"{JOINT}/benchmarks/pretrain/{CONTRASTIVE_RUN}.tsv"
    wildcard_constraints:
        method="|".join(JOINT_METHODS),
        encoder=r"[A-Za-z0-9][A-Za-z0-9-]*",
        pseed=r"\d+",
    conda:
        "../envs/torch.yaml"
    threads: CONTRASTIVE.get("resources", {}).get("cpus", 1)
    resources:
        gpu=CONTRASTIVE.get("resources", {}).get("gpu", 0),
        mem_mb=data_mem("contrastive_pretrain", CONTRASTIVE.get("resources", {}).get("mem_mb", 4000), JOINT_CORPUS),
        runtime=grows(CONTRASTIVE.get("resources", {}).get("runtime", 60)),
    params:
        # Only this method's block: tuning BYOL never reruns SimSiam.
        settings=lambda wc: as_json(CONTRASTIVE[wc.method]),
        encoder=lambda wc: as_json(config["encoders"][wc.encoder]),
        prepared=folder_of("images"),
        launch=launcher,
        out_dir=folder_of("encoder", "output"),
    shell:
        "OMP_NUM_THREADS={threads} {params.launch} {input.script} --prepared {params.prepared} --split {input.split} "
        "--validity {input.validity} --method {wildcards.method} --seed {wildcards.pseed} "
        "--encoder {params.encoder} --settings {params.settings} --out {params.out_dir} --log-file {log}"


rule contrastive_figures:
    """Loss and embedding spread (the collapse check) per epoch of every joint-embedding run."""
    input:
        script=script("contrastive_figures.py"),
        code=script_code("contrastive_figures.py"),
        histories=pretrain_files("history.csv", CONTRASTIVE_RUNS),
    output:
        [
            report(f"{JOINT}/figures/{name}.png", caption=f"../docs/captions/{name}.rst", category="Pretraining")
            for name in CONTRASTIVE_FIGURES
        ],
    log:
        f"{JOINT}/logs/contrastive_figures.log",
    benchmark:
        f"{JOINT}/benchmarks/contrastive_figures.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("contrastive_figures", "mem_mb"),
        runtime=job_resource("contrastive_figures", "runtime"),
    params:
        settings=as_json(config["plots"]),
    shell:
        "python {input.script} --histories {input.histories} --settings {params.settings} --out {output} --log {log}"

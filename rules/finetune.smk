# Fine-tuning is one process: a job given several GPUs would use one and hold the others idle.
if int(config["finetune"]["resources"]["gpu"]) > 1:
    raise ValueError(
        f"finetune.resources.gpu is {config['finetune']['resources']['gpu']}, but a fine-tuning job runs one "
        "process on one GPU (the cluster runs many fine-tunes side by side instead); set finetune.resources.gpu: 1"
    )

RUN_DIR = f"{DATA}/finetune/{{init}}/{{budget}}_seed{{seed}}{{variant}}"  # one fine-tuning run
FINETUNE_CHOICE_KEYS = ("inits", "imagenet_weights", "resources", "modes", "augment_presets", "ratios_at_every_budget")


rule finetune:
    """Fine-tune one initialisation on one labelled subset; model selection on validation only (classification)."""
    input:
        script=script("finetune.py"),
        code=script_code("finetune.py"),
        images=rules.prepare.output.images,
        split=rules.split.output.split,
        subset=f"{DATA}/split/subsets/{{budget}}_seed{{seed}}.csv",
        weights=finetune_weights,
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        history=f"{RUN_DIR}/history.csv",
        predictions=f"{RUN_DIR}/predictions.csv",
    log:
        f"{LOGS}/finetune/{{init}}/{{budget}}_seed{{seed}}{{variant}}.log",
    benchmark:
        f"{BENCH}/finetune/{{init}}/{{budget}}_seed{{seed}}{{variant}}.tsv"
    wildcard_constraints:
        init=r"[A-Za-z0-9_.-]+",
        budget=r"frac[0-9.]+|n[0-9]+",
        variant=VARIANTS,
        seed=r"\d+",
        dataset=CLASSIFIED,
    conda:
        "../envs/torch.yaml"
    threads: config["finetune"]["resources"]["cpus"]
    resources:
        gpu=config["finetune"]["resources"]["gpu"],
        mem_mb=data_mem("finetune", config["finetune"]["resources"]["mem_mb"]),
        runtime=grows(config["finetune"]["resources"]["runtime"]),
    params:
        settings=finetune_settings,
        encoder=lambda wc: as_json(config["encoders"][encoder_of(wc.init)]),
        patch_size=config["patch_validity"]["patch_size"],
        weights=weights_args,
        prepared=folder_of("images"),
        out_dir=folder_of("metrics", "output"),
        variant=variant_args,
        task=task_args,
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --prepared {params.prepared} --split {input.split} "
        "--subset {input.subset} --init {wildcards.init} --encoder {params.encoder} {params.weights} "
        "--patch-size {params.patch_size} --settings {params.settings} --seed {wildcards.seed} "
        "--budget {wildcards.budget} {params.variant} {params.task} --out {params.out_dir} --log {log}"


use rule finetune as segment with:
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        history=f"{RUN_DIR}/history.csv",
        predictions=f"{RUN_DIR}/predictions.csv",
        masks=f"{RUN_DIR}/predicted_masks.npy",  # test predictions
    wildcard_constraints:
        init=r"[A-Za-z0-9_.-]+",
        budget=r"frac[0-9.]+|n[0-9]+",
        variant=VARIANTS,
        seed=r"\d+",
        dataset=SEGMENTED,

def report_figure_runs():
    """figure name -> the run it shows: the first configured MRM-family method and MedIM (main ratio, first seed)."""
    methods = config["pretrain"]["methods"]
    runs = {}
    mrm = [m for m in methods if m.startswith("mrm")]
    if mrm:
        runs["mrm_reconstructions"] = run_names(mrm[0], config["pretrain"]["mask_ratio"])[0]
    if "medim" in methods:
        runs["medim_masks"] = run_names("medim", config["pretrain"]["mask_ratio"])[0]
    return runs


REPORT_FIGURES = list(report_figure_runs())


rule report_figures:
    """MRM: masked image and report beside their reconstructions; MedIM: report-guided masks, knowledge words."""
    input:
        script=script("report_figures.py"),
        code=package_code("analysis/report_figures.py", "analysis/pretrain_figures.py", "models", "text"),
        images=rules.prepare.output.images,
        reports=rules.prepare.output.reports,
        split=rules.split.output.split,
        validity=rules.patch_validity.output.validity,
        tokenizer=rules.tokenizer.output.tokenizer,
        autoencoders=[f"{RESULTS}/pretrain/{run}/autoencoder.safetensors" for run in report_figure_runs().values()],
    output:
        [
            report(f"{RESULTS}/figures/{name}.png", caption=f"../docs/captions/{name}.rst", category="Pretraining")
            for name in REPORT_FIGURES
        ],
    params:
        settings=as_json(config["plots"]),
        text=as_json(config["text"]),
        runs=[f"{RESULTS}/pretrain/{run}" for run in report_figure_runs().values()],
        prepared=f"{RESULTS}/prepared",
        out_dir=f"{RESULTS}/figures",
    log:
        f"{LOGS}/report_figures.log",
    benchmark:
        f"{BENCH}/report_figures.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python {input.script} --prepared {params.prepared} --split {input.split} --validity {input.validity} "
        "--tokenizer {input.tokenizer} --runs {params.runs} --text {params.text} --settings {params.settings} "
        "--out-dir {params.out_dir} --log {log}"

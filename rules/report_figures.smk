rule report_figures:
    """MRM: masked image and report beside their reconstructions; MedIM: report-guided masks, knowledge words."""
    input:
        script=script("report_figures.py"),
        code=script_code("report_figures.py"),
        images=rules.prepare.output.images,
        reports=rules.prepare.output.reports,
        split=rules.split.output.split,
        validity=rules.patch_validity.output.validity,
        tokenizer=rules.tokenizer.output.tokenizer,
        autoencoders=[f"{RESULTS}/pretrain/{run}/autoencoder.safetensors" for run in PLAN.report_figure_runs().values()],
    output:
        [
            report(f"{RESULTS}/figures/{name}.png", caption=f"../docs/captions/{name}.rst", category="Pretraining")
            for name in REPORT_FIGURES
        ],
    log:
        f"{LOGS}/report_figures.log",
    benchmark:
        f"{BENCH}/report_figures.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("report_figures", "mem_mb"),
        runtime=job_resource("report_figures", "runtime"),
    params:
        settings=as_json(config["plots"]),
        text=as_json(config["text"]),
        runs=lambda wc, input: [str(Path(p).parent) for p in input.autoencoders],
        prepared=folder_of("images"),
        out_dir=lambda wc, output: str(Path(output[0]).parent),
    shell:
        "python {input.script} --prepared {params.prepared} --split {input.split} --validity {input.validity} "
        "--tokenizer {input.tokenizer} --runs {params.runs} --text {params.text} --settings {params.settings} "
        "--out-dir {params.out_dir} --log {log}"

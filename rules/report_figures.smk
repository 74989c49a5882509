rule report_figures:
    """MRM: masked image and report beside their reconstructions; MedIM: report-guided masks, knowledge words."""
    input:
        script=script("report_figures.py"),
        code=script_code("report_figures.py"),
        images=at(MASKED_CORPUS, rules.prepare.output.images),
        reports=at(MASKED_CORPUS, rules.prepare.output.reports),
        split=at(MASKED_CORPUS, rules.split.output.split),
        validity=at(MASKED_CORPUS, rules.patch_validity.output.validity),
        tokenizer=at(MASKED_CORPUS, rules.tokenizer.output.tokenizer),
        autoencoders=pretrain_files("autoencoder.safetensors", REPORT_FIGURE_RUNS.values()),
    output:
        [
            report(f"{CORPUS}/figures/{name}.png", caption=f"../docs/captions/{name}.rst", category="Pretraining")
            for name in REPORT_FIGURES
        ],
    log:
        f"{CORPUS}/logs/report_figures.log",
    benchmark:
        f"{CORPUS}/benchmarks/report_figures.tsv"
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

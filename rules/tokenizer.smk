rule tokenizer:
    """WordPiece tokenizer of the training split's reports (or the user's `text.tokenizer` file, checked)."""
    input:
        script=script("tokenizer.py"),
        code=script_code("tokenizer.py"),
        reports=rules.prepare.output.reports,
        split=rules.split.output.split,
        given=[config["text"]["tokenizer"]] if config["text"].get("tokenizer") else [],
    output:
        tokenizer=f"{DATA}/text/tokenizer.json",
    log:
        f"{LOGS}/tokenizer.log",
    benchmark:
        f"{BENCH}/tokenizer.tsv"
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=job_resource("tokenizer", "mem_mb"),
        runtime=job_resource("tokenizer", "runtime"),
    params:
        settings=as_json({k: config["text"][k] for k in ("tokenizer", "vocab_size", "min_frequency")}),
    shell:
        "python {input.script} --reports {input.reports} --split {input.split} --settings {params.settings} "
        "--out {output.tokenizer} --log {log}"

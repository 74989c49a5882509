rule tokenizer:
    """WordPiece tokenizer of the training split's reports (or the user's `text.tokenizer` file, checked)."""
    input:
        script=script("tokenizer.py"),
        code=package_code("text/stage.py", "text/tokenizer.py", "text/reports.py", "text/keywords.py"),
        reports=rules.prepare.output.reports,
        split=rules.split.output.split,
        given=[config["text"]["tokenizer"]] if config["text"].get("tokenizer") else [],
    output:
        tokenizer=f"{RESULTS}/text/tokenizer.json",
    params:
        settings=as_json({k: config["text"][k] for k in ("tokenizer", "vocab_size", "min_frequency")}),
    log:
        f"{LOGS}/tokenizer.log",
    benchmark:
        f"{BENCH}/tokenizer.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python {input.script} --reports {input.reports} --split {input.split} --settings {params.settings} "
        "--out {output.tokenizer} --log {log}"

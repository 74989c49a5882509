rule split:
    """Stratified, patient-grouped train / validation / test split."""
    input:
        script=script("split.py"),
        code=script_code("split.py"),
        manifest=rules.prepare.output.manifest,
    output:
        split=f"{DATA}/split/split.csv",
    log:
        f"{LOGS}/split.log",
    benchmark:
        f"{BENCH}/split.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=job_resource("split", "mem_mb"),
        runtime=job_resource("split", "runtime"),
    params:
        settings=lambda wildcards: as_json(view(wildcards)["split"]),
    shell:
        "python {input.script} --manifest {input.manifest} --settings {params.settings} "
        "--out {output.split} --log {log}"


rule label_subset:
    """Nested, class-stratified labelled subset of the training part for one (budget, seed): frac<f> or n<count>."""
    input:
        script=script("label_subset.py"),
        code=script_code("label_subset.py"),
        split=rules.split.output.split,
    output:
        subset=f"{DATA}/split/subsets/{{budget}}_seed{{seed}}.csv",
    log:
        f"{LOGS}/label_subset/{{budget}}_seed{{seed}}.log",
    benchmark:
        f"{BENCH}/label_subset/{{budget}}_seed{{seed}}.tsv"
    wildcard_constraints:
        budget=r"frac[0-9.]+|n\d+",
        seed=r"\d+",
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=job_resource("label_subset", "mem_mb"),
        runtime=job_resource("label_subset", "runtime"),
    params:
        split_seed=lambda wildcards: view(wildcards)["split"]["seed"],
    shell:
        "python {input.script} --split {input.split} --budget {wildcards.budget} --seed {wildcards.seed} "
        "--split-seed {params.split_seed} --out {output.subset} --log {log}"

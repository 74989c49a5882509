rule patch_validity:
    """Lung coverage of each patch, the no-mask policy, a per-class summary and a figure."""
    input:
        unpack(patch_validity_masks),
        script=script("patch_validity.py"),
        code=script_code("patch_validity.py"),
        images=rules.prepare.output.images,
        manifest=rules.prepare.output.manifest,
    output:
        validity=f"{DATA}/patch_validity/validity.npz",
        summary=f"{DATA}/patch_validity/summary.csv",
        figure=report(
            f"{DATA}/figures/valid_patches.png",
            caption="../docs/captions/valid_patches.rst",
            category="Data",
        ),
        # The dataset's own lung masks, checked as predicted ones are (lung_masks/qc.csv): which ones fail and why.
        mask_qc=f"{DATA}/patch_validity/provided_mask_qc.csv",
        mask_qc_figure=f"{DATA}/figures/provided_mask_qc.png",
    log:
        f"{LOGS}/patch_validity.log",
    benchmark:
        f"{BENCH}/patch_validity.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=data_mem("patch_validity"),
        runtime=job_resource("patch_validity", "runtime"),
    params:
        settings=as_json(config["patch_validity"]),
        prepared=folder_of("images"),
        # Empty with lung_masks.mode: provided, so the command stays as before.
        masks=patch_validity_mask_args,
        # Provided masks get the lung-mask QC and its policy too.
        mask_qc=lambda wildcards: as_json({k: v for k, v in lung_masks(wildcards).items() if k in ("qc", "qc_policy")}),
    shell:
        "python {input.script} --prepared {params.prepared} --settings {params.settings} "
        "--out {output.validity} --summary {output.summary} --figure {output.figure} {params.masks} "
        "--mask-qc {params.mask_qc} --mask-qc-table {output.mask_qc} "
        "--mask-qc-figure {output.mask_qc_figure} --log {log}"

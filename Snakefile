# cxrmim: masked image modeling (MAE, region-guided RGMIM) for chest X-rays.
# `snakemake --cores N` regenerates every table, figure and the report for the configured dataset.
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "workflow_config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"


rule all:
    """Default target: the report and everything it is built from."""
    input:
        all_targets(),
    default_target: True


include: "rules/download.smk"
include: "rules/prepare.smk"
include: "rules/lung_masks.smk"
include: "rules/split.smk"
include: "rules/patch_validity.smk"
include: "rules/tokenizer.smk"
include: "rules/pretrain.smk"
include: "rules/finetune.smk"
include: "rules/tables.smk"
include: "rules/figures.smk"
include: "rules/report_figures.smk"
include: "rules/report.smk"

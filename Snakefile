# cxrmim: masked image modeling (MAE, region-guided RGMIM) for chest X-rays.
# `snakemake --cores N` regenerates every table, figure and report: one dataset's, or a pretraining corpus and the
# datasets an experiment evaluates on (cxrmim.experiment).
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("8.0")

# The workflow's own package is reached from its src/, not installed into the conda envs (they hold third-party
# packages only, so `--sdm conda` copies of envs/*.yaml stay valid wherever Snakemake puts them): the Snakefile
# imports it from there, and every job gets it on PYTHONPATH. Without conda the same code runs as in the
# editable install, so a job always runs this checkout's code, the code its inputs track.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
# Keep Snakemake's bash strict mode, which a shell prefix replaces (braces doubled twice: f-string, then format).
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(SRC)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


configfile: "workflow_config.yaml"


validate(config, "schemas/config.schema.yaml")


report: "docs/captions/workflow.rst"


include: "rules/common.smk"


# A dataset's folder is results/<name>/ for the datasets some job reads (cxrmim.experiment); rules of the evaluation
# datasets narrow it further.
wildcard_constraints:
    dataset=DATASETS,


# Default target: the report and everything it is built from.
rule all:
    default_target: True
    input:
        all_targets(),


# Sub-second stages run in the main Snakemake process, never queued on a cluster.
localrules:
    all,
    split,
    label_subset,
    tables,
    report,
    experiment_report,


include: "rules/download.smk"
include: "rules/prepare.smk"
include: "rules/lung_masks.smk"
include: "rules/split.smk"
include: "rules/patch_validity.smk"
include: "rules/tokenizer.smk"
include: "rules/pretrain.smk"
include: "rules/contrastive.smk"
include: "rules/finetune.smk"
include: "rules/tables.smk"
include: "rules/figures.smk"
include: "rules/report_figures.smk"
include: "rules/report.smk"


if not PLAN.experiment.single:

    include: "rules/experiment.smk"

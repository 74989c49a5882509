# Paths and input functions shared by all rules (no rules here). Which jobs exist, and the config checks that
# refuse a config before any job runs, are cxrmim.plan; what each method is, cxrmim.registry (both torch-free).
import json
import os
import shlex
from pathlib import Path

from cxrmim import registry
from cxrmim.codebase import module_closure  # the package modules a script imports (torch-free)
from cxrmim.inits import parse_init  # one spelling of run names
from cxrmim.plan import Plan, check, parse_variant, run_outputs, variant_pattern
from cxrmim.recipe import init_settings
from cxrmim.resources import job_mem_mb  # mem_mb from the cache's size (torch-free)

check(config)  # what the schema cannot check (patch size vs image size, inits, methods), before any job runs
PLAN = Plan(config)

RESULTS = PLAN.results
RESOURCES_DIR = f"resources/{config['dataset']['name']}"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"


WORKFLOW_DIR = Path(workflow.basedir)


def workflow_file(path):
    """A file of this workflow as a path relative to the working directory.

    Relative, not absolute: Snakemake records each job's input paths, so absolute ones would make a moved or
    copied project (a renamed checkout, a results tree brought to scratch) rerun every job. Relative paths also
    keep a failed job's printed command pasteable from the working directory.
    """
    return os.path.relpath(WORKFLOW_DIR / path)


def script(name):
    """A stage script as an input (editing it reruns the rule), at its place in the workflow, not a cache copy."""
    return workflow_file(f"scripts/{name}")


def script_code(name):
    """Every package module a stage script reaches through its imports, as inputs: editing one reruns the stage."""
    return [workflow_file(f.relative_to(WORKFLOW_DIR)) for f in module_closure(WORKFLOW_DIR / "scripts" / name)]


def folder_of(name, io="input"):
    """A param with the folder of the named input (or output) file, derived so it follows that file's path."""

    def folder(files):
        value = getattr(files, name)
        return str(Path(value if isinstance(value, str) else value[0]).parent)

    if io == "input":
        return lambda wildcards, input: folder(input)
    return lambda wildcards, output: folder(output)


def grows(value):
    """A mem_mb/runtime that grows with the retry attempt, so a job killed for memory or time gets more next time."""
    return lambda wildcards, attempt: int(value) * attempt


def launcher(wildcards, resources):
    """`python`, or torchrun with one process per GPU on one node when the job has more than one GPU.

    Derived from the job's resources, so Snakemake does not count it as a changed param.
    """
    gpus = int(resources.get("gpu", 0) or 0)
    return "python" if gpus <= 1 else f"torchrun --standalone --nnodes 1 --nproc_per_node {gpus}"


def job_resource(rule_name, key):
    """mem_mb or runtime for rules without their own config section, from `resources.<rule>` or `resources.default`."""
    section = config["resources"]
    return grows(section.get(rule_name, {}).get(key, section["default"][key]))


def data_mem(rule_name, configured=None):
    """mem_mb sized from the prepared cache (cxrmim.resources; the configured value is the floor), x the attempt.

    Without `configured`, the floor is `resources.<rule>` or `resources.default`, as in job_resource.
    """
    if configured is None:
        configured = config["resources"].get(rule_name, config["resources"]["default"])["mem_mb"]

    def mem_mb(wildcards, input, attempt):
        method = wildcards.get("method")
        return job_mem_mb(rule_name, input.images, configured, config, method) * attempt

    return mem_mb


def as_json(value):
    """Shell-quoted JSON of a config section for a script's --settings argument (also the tracked param)."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def section(name, drop=()):
    """A config section without the keys that only choose which jobs exist (so adding jobs reruns nothing)."""
    return {k: v for k, v in config[name].items() if k not in drop}


CONTRASTIVE = PLAN.contrastive  # SimSiam / BYOL: an optional section; without it (or with no methods) no jobs
PRETRAIN_RUNS = PLAN.pretrain_runs
CONTRASTIVE_RUNS = PLAN.contrastive_runs
MASKED_METHODS = tuple(m.name for m in registry.METHODS if m.has_mask_ratio)  # what rule pretrain trains
JOINT_METHODS = registry.methods(registry.JOINT)  # what rule contrastive_pretrain trains
VARIANTS = variant_pattern()


def finetune_metrics():
    """metrics.json of every fine-tuning run."""
    return [f"{RESULTS}/{run}/metrics.json" for run in PLAN.finetune_runs()]


TABLES = ["verdict", "label_fractions", "mask_ratio", "hyperparameters", "significance", "study"]
RESULT_FIGURES = [
    "accuracy_by_budget",  # the verdict's headline figure and comparisons heatmap (from the tables' CSVs)
    "significance_heatmap",
    "accuracy_vs_fraction",
    "auc_vs_fraction",
    "accuracy_vs_epoch",
    "accuracy_vs_mask_ratio",
    "confusion_matrices",
]
PRETRAIN_FIGURES = ["masking_illustration", "reconstructions", "pretrain_loss"]
CONTRASTIVE_FIGURES = ["contrastive_pretraining"] if CONTRASTIVE_RUNS else []


def all_targets():
    """Everything `rule all` asks for."""
    return [f"{RESULTS}/report.html"]


def finetune_weights(wildcards):
    """Weights a fine-tuning run starts from: a pretrained encoder, a local file (ImageNet, a published encoder), or
    none."""
    spec = parse_init(wildcards.init)
    if spec.pretrained:
        return [f"{RESULTS}/pretrain/{wildcards.init}/encoder.safetensors"]
    if spec.weights_key:
        return [config["finetune"][spec.weights_key][spec.encoder_key]]
    if spec.entries:
        return [config[spec.entries][spec.entry]["path"]]
    return []


def encoder_of(init):
    """The `encoders` entry a fine-tuning init uses."""
    return PLAN.encoder_of(init)


def weights_args(wildcards, input):
    """--weights of the init's file, plus --external with its external_inits entry for a published encoder
    (one param, so runs of the other inits keep their recorded params)."""
    args = f"--weights {input.weights}" if input.weights else ""
    spec = parse_init(wildcards.init)
    return f"{args} --external {as_json(config[spec.entries][spec.entry])}" if spec.entries else args


def finetune_settings(wildcards):
    """The finetune section this init trains with (its recipe merged over it), as the script's --settings."""
    return as_json(init_settings(config["finetune"], wildcards.init, drop=FINETUNE_CHOICE_KEYS))


# Lung masks for datasets without them (rules/lung_masks.smk).

LUNG_MASKS = config["lung_masks"]
LUNG_MASK_DIR = f"{RESULTS}/lung_masks"


def segmenter_weights(wildcards=None):
    """The segmentation weights lung_masks uses: trained in this run, or the file lung_masks.weights names."""
    if LUNG_MASKS["mode"] == "train_and_predict":
        return f"{LUNG_MASK_DIR}/segmenter.safetensors"
    if not LUNG_MASKS.get("weights"):
        raise ValueError(
            "lung_masks.mode is 'predict' but lung_masks.weights is empty; set it to a segmenter "
            ".safetensors (e.g. results/<other>/lung_masks/segmenter.safetensors), or use "
            "mode: train_and_predict"
        )
    return LUNG_MASKS["weights"]


def segmenter_source_files(wildcards):
    """Manifest CSVs among the train sources, so editing one retrains the segmenter."""
    return [
        s["source"] for s in LUNG_MASKS.get("train_sources") or [] if s.get("source") and Path(s["source"]).is_file()
    ]


def patch_validity_masks(wildcards):
    """Masks patch_validity reads: the prepared ones (mode provided) or the predicted ones and their QC decisions."""
    if LUNG_MASKS["mode"] == "provided":
        return {"masks": rules.prepare.output.masks}
    return {"masks": rules.lung_masks.output.masks, "mask_status": rules.lung_masks.output.qc}


def patch_validity_mask_args(wildcards, input):
    """The optional --masks/--mask-status arguments of scripts/patch_validity.py."""
    if "mask_status" not in input.keys():
        return ""
    return f"--masks {input.masks} --mask-status {input.mask_status}"


if LUNG_MASKS["mode"] == "predict":
    segmenter_weights()  # fail at DAG construction, not inside a job, when the weights are not configured


def report_lung_masks(wildcards):
    """The lung_masks summary when masks are predicted (mode predict / train_and_predict), else nothing."""
    return {} if config["lung_masks"]["mode"] == "provided" else {"lung_masks_summary": rules.lung_masks.output.summary}


def pretrain_settings(method):
    """The `pretrain:` section for one method: the shared keys plus only that method's own subsection."""
    return PLAN.method_settings(method, drop=PRETRAIN_CHOICE_KEYS)


def report_inputs(wildcards):
    """The tokenizer (and the reports next to the cache) for the methods that read reports."""
    if not registry.method(wildcards.method).reads_reports:
        return {}
    inputs = {"tokenizer": rules.tokenizer.output.tokenizer, "reports": rules.prepare.output.reports}
    if config["text"].get("keywords"):
        inputs["keywords"] = config["text"]["keywords"]
    return inputs


def report_args(wildcards, input):
    """The report methods' extra command-line arguments."""
    if not registry.method(wildcards.method).reads_reports:
        return ""
    return f"--tokenizer {input.tokenizer} --text {as_json(config['text'])}"


REPORT_FIGURES = list(PLAN.report_figure_runs())


def variant_args(wildcards):
    """--mode/--augment of a run folder's `_<mode>-<preset>` suffix; none for the default (full, current)."""
    variant = parse_variant(wildcards.variant)
    return "" if variant is None else f"--mode {variant[0]} --augment {variant[1]}"


def task_args():
    """The dataset's task (multiclass when unset), its positive class or findings."""
    dataset = config["dataset"]
    args = f"--task {dataset.get('task', 'multiclass')}"
    if dataset.get("positive"):
        args += f" --positive {shlex.quote(str(dataset['positive']))}"
    if dataset.get("findings"):
        args += f" --findings {shlex.quote(json.dumps(list(dataset['findings'])))}"
    return args

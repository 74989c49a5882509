# Paths and input functions shared by all rules (no rules here). Which jobs exist, and the config checks that
# refuse a config before any job runs, are cxrmim.plan; what each method is, cxrmim.registry (both torch-free).
import json
import os
import re
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

DATA = "results/{dataset}"  # one dataset's results folder: its data stages, fine-tunes, tables and report
LOGS = f"{DATA}/logs"
BENCH = f"{DATA}/benchmarks"
DATASETS = "|".join(map(re.escape, PLAN.datasets))  # every dataset some job reads
EVALUATED = "|".join(map(re.escape, PLAN.evaluated))
SEGMENTED_NAMES = [name for name in PLAN.evaluated if PLAN.view(name)["dataset"].get("task") == "segmentation"]
NEVER = "(?!)"  # a wildcard pattern that matches nothing (no dataset of that kind)
SEGMENTED = "|".join(map(re.escape, SEGMENTED_NAMES)) or NEVER  # rule segment's datasets (its masks an output)
CLASSIFIED = "|".join(re.escape(n) for n in PLAN.evaluated if n not in SEGMENTED_NAMES) or NEVER  # rule finetune's
# Pretraining runs live under their corpus: results/<corpus>/pretrain/<run>.
MASKED_CORPUS = PLAN.experiment.corpus(registry.methods(registry.MASKED)[0])
JOINT_CORPUS = PLAN.experiment.corpus(registry.methods(registry.JOINT)[0])
CORPUS = f"results/{MASKED_CORPUS}"  # the masked and report-aware methods' corpus
JOINT = f"results/{JOINT_CORPUS}"  # the joint-embedding methods' corpus (the same one unless configured)
EXPERIMENT = f"results/{PLAN.experiment.name}"  # the cross-dataset summary and report (several datasets)


def at(dataset, pattern):
    """A path pattern of the per-dataset rules with its {dataset} filled in (input functions return paths)."""
    return pattern.replace("{dataset}", dataset)


def view(wildcards):
    """The config the job's dataset reads (cxrmim.experiment: its own dataset, split, label budgets, lung masks)."""
    return PLAN.view(wildcards.dataset)


def pretrain_dir(run):
    """The folder of a pretraining run: under the corpus it trained on."""
    return f"results/{PLAN.corpus_of(run)}/pretrain/{run}"


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


def data_mem(rule_name, configured=None, dataset=None):
    """mem_mb sized from the prepared cache (cxrmim.resources; the configured value is the floor), x the attempt.

    Without `configured`, the floor is `resources.<rule>` or `resources.default`, as in job_resource. The cache is
    the job's {dataset}'s, or `dataset`'s for the rules of one corpus.
    """
    if configured is None:
        configured = config["resources"].get(rule_name, config["resources"]["default"])["mem_mb"]

    def mem_mb(wildcards, input, attempt):
        method = wildcards.get("method")
        sizes = PLAN.view(dataset or wildcards.dataset)
        return job_mem_mb(rule_name, input.images, configured, sizes, method) * attempt

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


def finetune_metrics(wildcards):
    """metrics.json of every fine-tuning run on the job's evaluation dataset."""
    return dataset_metrics(wildcards.dataset)


def dataset_metrics(dataset):
    """metrics.json of every fine-tuning run on one evaluation dataset."""
    return [f"results/{dataset}/{run}/metrics.json" for run in PLAN.finetune_runs(dataset)]


def pretrain_files(name, runs):
    """One file of each of `runs`, in the run folders under their corpora."""
    return [f"{pretrain_dir(run)}/{name}" for run in runs]


TABLES = ["verdict", "label_fractions", "mask_ratio", "hyperparameters", "significance", "study"]
RESULT_FIGURES = [
    "accuracy_by_budget",  # the verdict's headline figure and comparisons heatmap (from the tables' CSVs)
    "significance_heatmap",
    "accuracy_vs_fraction",
    "auc_vs_fraction",
    "accuracy_vs_epoch",
    "accuracy_vs_mask_ratio",
    "confusion_matrices",
    "worst_segmentations",  # segmentation datasets (an empty figure with the reason for the others)
]
PRETRAIN_FIGURES = ["masking_illustration", "reconstructions", "pretrain_loss"]
CONTRASTIVE_FIGURES = ["contrastive_pretraining"] if CONTRASTIVE_RUNS else []


def all_targets():
    """What the `all` target asks for: the report (one dataset) or the experiment's report (several)."""
    return [f"{EXPERIMENT}/report.html"]


def dataset_reports():
    """Each evaluation dataset's report (several datasets: the experiment report links them)."""
    return [f"results/{name}/report.html" for name in PLAN.evaluated]


def finetune_weights(wildcards):
    """Weights a fine-tuning run starts from: a pretrained encoder, a local file (ImageNet, a published encoder), or
    none."""
    spec = parse_init(wildcards.init)
    if spec.pretrained:
        return [f"{pretrain_dir(wildcards.init)}/encoder.safetensors"]
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

LUNG_MASK_DIR = f"{DATA}/lung_masks"


def lung_masks(wildcards):
    """The job's dataset's `lung_masks` section."""
    return view(wildcards)["lung_masks"]


def segmenter_weights(wildcards):
    """The segmentation weights lung_masks uses: trained in this run, or the file lung_masks.weights names."""
    return dataset_segmenter(wildcards.dataset)


def dataset_segmenter(dataset):
    """A dataset's segmenter weights (lung_masks.mode predict: the configured file, which must be set)."""
    section = PLAN.view(dataset)["lung_masks"]
    if section["mode"] == "train_and_predict":
        return at(dataset, f"{LUNG_MASK_DIR}/segmenter.safetensors")
    if not section.get("weights"):
        raise ValueError(
            f"lung_masks.mode of dataset {dataset} is 'predict' but lung_masks.weights is empty; set it "
            "to a segmenter .safetensors (e.g. results/<other>/lung_masks/segmenter.safetensors), or use "
            "mode: train_and_predict"
        )
    return section["weights"]


def segmenter_source_files(wildcards):
    """Manifest CSVs among the train sources, so editing one retrains the segmenter."""
    sources = lung_masks(wildcards).get("train_sources") or []
    return [s["source"] for s in sources if s.get("source") and Path(s["source"]).is_file()]


def patch_validity_masks(wildcards):
    """Masks patch_validity reads: the prepared ones (mode provided) or the predicted ones and their QC decisions."""
    if lung_masks(wildcards)["mode"] == "provided":
        return {"masks": at(wildcards.dataset, rules.prepare.output.masks)}
    return {
        "masks": at(wildcards.dataset, rules.lung_masks.output.masks),
        "mask_status": at(wildcards.dataset, rules.lung_masks.output.qc),
    }


def patch_validity_mask_args(wildcards, input):
    """The optional --masks/--mask-status arguments of scripts/patch_validity.py."""
    if "mask_status" not in input.keys():
        return ""
    return f"--masks {input.masks} --mask-status {input.mask_status}"


for corpus in PLAN.corpora:  # fail at DAG construction, not inside a job, when the weights are not configured
    if PLAN.view(corpus)["lung_masks"]["mode"] == "predict":
        dataset_segmenter(corpus)


def report_lung_masks(wildcards):
    """The corpus's lung_masks summary when its masks are predicted (mode predict / train_and_predict), else nothing."""
    if PLAN.view(MASKED_CORPUS)["lung_masks"]["mode"] == "provided":
        return {}
    return {"lung_masks_summary": at(MASKED_CORPUS, rules.lung_masks.output.summary)}


def pretrain_settings(method):
    """The `pretrain:` section for one method: the shared keys plus only that method's own subsection."""
    return PLAN.method_settings(method, drop=PRETRAIN_CHOICE_KEYS)


def report_inputs(wildcards):
    """The corpus's tokenizer (and the reports next to its cache) for the methods that read reports."""
    if not registry.method(wildcards.method).reads_reports:
        return {}
    tokenizer, reports = rules.tokenizer.output.tokenizer, rules.prepare.output.reports
    inputs = {"tokenizer": at(MASKED_CORPUS, tokenizer), "reports": at(MASKED_CORPUS, reports)}
    if config["text"].get("keywords"):
        inputs["keywords"] = config["text"]["keywords"]
    return inputs


def report_args(wildcards, input):
    """The report methods' extra command-line arguments."""
    if not registry.method(wildcards.method).reads_reports:
        return ""
    return f"--tokenizer {input.tokenizer} --text {as_json(config['text'])}"


REPORT_FIGURE_RUNS = PLAN.report_figure_runs(MASKED_CORPUS)
REPORT_FIGURES = list(REPORT_FIGURE_RUNS)


def variant_args(wildcards):
    """--mode/--augment of a run folder's `_<mode>-<preset>` suffix; none for the default (full, current)."""
    variant = parse_variant(wildcards.variant)
    return "" if variant is None else f"--mode {variant[0]} --augment {variant[1]}"


def segmentation_figure_inputs(wildcards):
    """The prepared images and masks the worst-predictions figure draws, for a segmentation dataset only (so the
    figures of a classification dataset never wait on, or rerun for, its cache)."""
    if view(wildcards)["dataset"].get("task") != "segmentation":
        return {}
    outputs = rules.prepare.output
    inputs = {name: at(wildcards.dataset, getattr(outputs, name)) for name in ("images", "masks", "lesion_masks")}
    runs = PLAN.finetune_runs(wildcards.dataset)
    return inputs | {"predicted_masks": [f"results/{wildcards.dataset}/{run}/predicted_masks.npy" for run in runs]}


def task_args(wildcards):
    """The job's dataset's task (multiclass when unset), its positive class or findings, or its segment."""
    dataset = view(wildcards)["dataset"]
    args = f"--task {dataset.get('task', 'multiclass')}"
    if dataset.get("positive"):
        args += f" --positive {shlex.quote(str(dataset['positive']))}"
    if dataset.get("findings"):
        args += f" --findings {shlex.quote(json.dumps(list(dataset['findings'])))}"
    if dataset.get("task") == "segmentation":
        args += f" --segment {dataset.get('segment') or 'lung'}"
    return args

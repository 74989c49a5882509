# Paths, job lists and parameter helpers shared by all rules (no rules here).
import json
import os
import shlex
from pathlib import Path

from cxrmim.codebase import module_closure  # the package modules a script imports (torch-free)
from cxrmim.config import check_consistency

# one spelling of budgets in file names (the package uses the same helpers)
from cxrmim.data.splits import budget_tag, configured_budgets, fraction_tag
from cxrmim.external_formats import resolve_external
from cxrmim.inits import (
    CONTRASTIVE_METHODS,
    MASKED_METHODS,
    PRETRAIN_METHODS,
    REPORT_METHODS,
    parse_init,
    pretrain_run_name,
)  # one spelling of run names (torch-free)
from cxrmim.recipe import check_recipes, init_settings

check_consistency(config)  # what the schema cannot check (patch size vs image size), before any job runs

RESULTS = f"results/{config['dataset']['name']}"
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


def as_json(value):
    """Shell-quoted JSON of a config section for a script's --settings argument (also the tracked param)."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def section(name, drop=()):
    """A config section without the keys that only choose which jobs exist (so adding jobs reruns nothing)."""
    return {k: v for k, v in config[name].items() if k not in drop}


PRETRAIN_SEEDS = [int(s) for s in config["pretrain"]["seeds"]]
# SimSiam / BYOL: an optional section; without it (or with no methods) it adds no jobs.
CONTRASTIVE = config.get("contrastive") or {}
CONTRASTIVE_METHODS_USED = list(CONTRASTIVE.get("methods") or [])


def run_names(method, ratio, encoder=None):
    """Folder names of one (method, ratio, encoder) pretraining, one per pretraining seed."""
    encoder = encoder or config["pretrain"]["encoder"]
    return [pretrain_run_name(method, ratio, encoder, seed) for seed in PRETRAIN_SEEDS]


def contrastive_run_names(method):
    """Folder names of one contrastive method's runs: one per (contrastive encoder, pretraining seed)."""
    return [
        pretrain_run_name(method, None, encoder, seed)
        for encoder in CONTRASTIVE.get("encoders") or []
        for seed in PRETRAIN_SEEDS
    ]


def init_names(init):
    """Concrete fine-tuning inits for a config entry: one per pretraining seed for rgmim/mae (main ratio),
    one per (encoder, pretraining seed) for simsiam/byol."""
    if init in CONTRASTIVE_METHODS:
        return contrastive_run_names(init)
    return run_names(init, config["pretrain"]["mask_ratio"]) if init in PRETRAIN_METHODS else [init]


def check_contrastive():
    """Every contrastive method has its settings block and every contrastive encoder is an `encoders` key."""
    for method in CONTRASTIVE_METHODS_USED:
        if not CONTRASTIVE.get(method):
            raise ValueError(f"contrastive.methods has {method!r} but contrastive.{method} (its settings) is missing")
    for encoder in CONTRASTIVE.get("encoders") or []:
        if encoder not in config["encoders"]:
            raise ValueError(
                f"contrastive.encoders has {encoder!r} but encoders has no such key; "
                f"known encoders: {sorted(config['encoders'])}"
            )


def check_inits():
    """Fail at DAG construction with a clear message when an init cannot be built."""
    encoders = config["encoders"]
    for init in config["finetune"]["inits"]:
        if init in CONTRASTIVE_METHODS:
            if init not in CONTRASTIVE_METHODS_USED:
                raise ValueError(f"finetune.inits has {init!r} but contrastive.methods does not; add it there")
            continue
        if init in PRETRAIN_METHODS:
            if init not in config["pretrain"]["methods"]:
                raise ValueError(f"finetune.inits has {init!r} but pretrain.methods does not; add it there")
            continue
        spec = parse_init(init)
        if spec.external is not None:
            check_external(spec)
            continue
        if spec.encoder_key not in encoders:
            raise ValueError(
                f"finetune.inits has {init!r} but encoders has no {spec.encoder_key!r}; "
                f"known encoders: {sorted(encoders)}"
            )
        if spec.kind == "imagenet" and not (config["finetune"].get("imagenet_weights") or {}).get(spec.encoder_key):
            raise ValueError(
                f"finetune.inits has {init!r}: set finetune.imagenet_weights.{spec.encoder_key} to a "
                "local weights file (no downloads at run time), or remove it from finetune.inits"
            )
    if config["pretrain"]["encoder"] not in encoders:
        raise ValueError(
            f"pretrain.encoder {config['pretrain']['encoder']!r} is not in encoders " f"(known: {sorted(encoders)})"
        )


def check_external(spec):
    """An external init has its entry, a known format, an `encoders` architecture and its file in place."""
    entries = config.get("external_inits") or {}
    if spec.external not in entries:
        raise ValueError(
            f"finetune.inits has {spec.name!r} but external_inits has no {spec.external!r}; "
            f"known external inits: {sorted(entries)}"
        )
    ext = resolve_external(spec.external, entries[spec.external])
    if ext.encoder not in config["encoders"]:
        raise ValueError(
            f"external_inits.{spec.external}.encoder {ext.encoder!r} is not in encoders; add an entry with the "
            f"checkpoint's architecture (known: {sorted(config['encoders'])})"
        )
    if not Path(ext.path).exists():
        raise FileNotFoundError(
            f"external_inits.{spec.external}.path {ext.path} does not exist; point it at the downloaded "
            f"checkpoint, or remove {spec.name} from finetune.inits"
        )


check_inits()
check_contrastive()
check_recipes(config["finetune"])
FRACTIONS = [fraction_tag(f) for f in config["label_fractions"]["fractions"]]  # "0.01", "1": fractions only
# Every label budget as its path tag: frac<fraction> (label_fractions.fractions), n<count> (label_fractions.counts).
BUDGETS = configured_budgets(config["label_fractions"])
SEEDS = [int(s) for s in config["label_fractions"]["seeds"]]


def budget_seeds(budget):
    """The label-subset seeds of one budget: label_fractions.seeds, or that budget's seeds_by_budget entry."""
    return [int(s) for s in (config["label_fractions"].get("seeds_by_budget") or {}).get(budget, SEEDS)]


MAIN_INITS = [name for i in config["finetune"]["inits"] for name in init_names(i)]
RATIO_RUNS = [
    name
    for m in config["pretrain"]["methods"]
    if m in MASKED_METHODS
    for r in sorted(set(config["pretrain"].get("mask_ratios", [])) | {config["pretrain"]["mask_ratio"]})
    for name in run_names(m, r)
]
PRETRAIN_RUNS = sorted(set(RATIO_RUNS) | {i for i in MAIN_INITS if parse_init(i).kind in MASKED_METHODS})
CONTRASTIVE_RUNS = [name for m in CONTRASTIVE_METHODS_USED for name in contrastive_run_names(m)]


def finetune_dirs():
    """Every fine-tuning run: main inits at every label budget, each masking ratio at 100% labels (or every budget),
    and each of them once per (mode, augmentation preset) pair.

    A pretrained init exists once per pretraining seed, so its runs cross pretraining seeds with subset seeds.
    """
    runs = {(i, b, s) for i in MAIN_INITS for b in BUDGETS for s in budget_seeds(b)}
    # The masking-ratio study fine-tunes at 100% labels, or at every budget (finetune.ratios_at_every_budget).
    ratio_budgets = BUDGETS if config["finetune"].get("ratios_at_every_budget") else [budget_tag(fraction=1)]
    runs |= {(r, b, s) for r in RATIO_RUNS for b in ratio_budgets for s in budget_seeds(b)}
    return [f"{RESULTS}/finetune/{i}/{b}_seed{s}{v}" for i, b, s in sorted(runs) for v in finetune_variants()]


def finetune_variants():
    """Run-folder suffix of each (mode, augmentation preset) pair: none for (full, current), today's runs."""
    modes = config["finetune"].get("modes", ["full"])
    presets = config["finetune"].get("augment_presets", ["current"])
    return ["" if (m, p) == ("full", "current") else f"_{m}-{p}" for m in modes for p in presets]


def finetune_metrics():
    """metrics.json of every fine-tuning run."""
    return [f"{d}/metrics.json" for d in finetune_dirs()]


TABLES = ["label_fractions", "mask_ratio", "hyperparameters", "significance", "study"]
RESULT_FIGURES = [
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
    """Weights a fine-tuning run starts from: a pretrained encoder, a local ImageNet file, or none."""
    spec = parse_init(wildcards.init)
    if spec.pretrained:
        return [f"{RESULTS}/pretrain/{wildcards.init}/encoder.safetensors"]
    if spec.kind == "imagenet":
        return [config["finetune"]["imagenet_weights"][spec.encoder_key]]
    if spec.external is not None:
        return [config["external_inits"][spec.external]["path"]]
    return []


def encoder_of(init):
    """The `encoders` entry a fine-tuning init uses."""
    spec = parse_init(init)
    return config["external_inits"][spec.external]["encoder"] if spec.external else spec.encoder_key


def weights_args(wildcards, input):
    """--weights of the init's file, plus --external with its external_inits entry for a published encoder
    (one param, so runs of the other inits keep their recorded params)."""
    args = f"--weights {input.weights}" if input.weights else ""
    key = parse_init(wildcards.init).external
    return f"{args} --external {as_json(config['external_inits'][key])}" if key else args


def finetune_settings(wildcards):
    """The finetune section this init trains with (its recipe merged over it), as the script's --settings."""
    return as_json(init_settings(config["finetune"], wildcards.init, drop=FINETUNE_CHOICE_KEYS))


# Lung masks for datasets without them (rules/lung_masks.smk).

LUNG_MASKS = config["lung_masks"]
LUNG_MASK_DIR = f"{RESULTS}/lung_masks"
# Keys that only shape prediction, QC or the job: changing them must not retrain the segmenter.
NOT_TRAINING_KEYS = ("mode", "weights", "dilation", "qc_policy", "prefer_provided", "resources")
# Keys prediction depends on (architecture keys matter only for weights without cxrmim metadata).
PREDICT_KEYS = (
    "image_size",
    "encoder",
    "decoder_channels",
    "batch_size",
    "dilation",
    "qc",
    "qc_policy",
    "prefer_provided",
    "device",
)


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


PRETRAIN_CHOICE_KEYS = ("methods", "mask_ratio", "mask_ratios", "encoder", "seeds", "resources")
METHOD_SECTIONS = {
    "mrm": "mrm",
    "mrm-noreport": "mrm",
    "mrm-nosr": "mrm",
    "medim": "medim",
}  # method -> its own section


def pretrain_settings(method):
    """The `pretrain:` section for one method: the shared keys plus only that method's own subsection."""
    own = METHOD_SECTIONS.get(method)
    drop = PRETRAIN_CHOICE_KEYS + tuple(s for s in set(METHOD_SECTIONS.values()) if s != own)
    return section("pretrain", drop=drop)


def report_inputs(wildcards):
    """The tokenizer (and the reports next to the cache) for the methods that read reports."""
    if wildcards.method not in REPORT_METHODS:
        return {}
    inputs = {"tokenizer": rules.tokenizer.output.tokenizer, "reports": rules.prepare.output.reports}
    if config["text"].get("keywords"):
        inputs["keywords"] = config["text"]["keywords"]
    return inputs


def report_args(wildcards, input):
    """The report methods' extra command-line arguments."""
    if wildcards.method not in REPORT_METHODS:
        return ""
    return f"--tokenizer {input.tokenizer} --text {as_json(config['text'])}"


def report_figure_runs():
    """figure name -> the run it shows: the first configured MRM-family method and MedIM (main ratio, first seed)."""
    methods = config["pretrain"]["methods"]
    runs = {}
    mrm = [m for m in methods if m.startswith("mrm")]
    if mrm:
        runs["mrm_reconstructions"] = run_names(mrm[0], config["pretrain"]["mask_ratio"])[0]
    if "medim" in methods:
        runs["medim_masks"] = run_names("medim", config["pretrain"]["mask_ratio"])[0]
    return runs


REPORT_FIGURES = list(report_figure_runs())


def variant_args(wildcards):
    """--mode/--augment of a run folder's `_<mode>-<preset>` suffix; none for the default (full, current)."""
    if not wildcards.variant:
        return ""
    mode, preset = wildcards.variant[1:].split("-")
    return f"--mode {mode} --augment {preset}"


def task_args():
    """The dataset's task (multiclass when unset), its positive class or findings."""
    dataset = config["dataset"]
    args = f"--task {dataset.get('task', 'multiclass')}"
    if dataset.get("positive"):
        args += f" --positive {shlex.quote(str(dataset['positive']))}"
    if dataset.get("findings"):
        args += f" --findings {shlex.quote(json.dumps(list(dataset['findings'])))}"
    return args


def first_variant():
    """The (mode, preset) the paper's figures draw: the first configured of each."""
    return config["finetune"].get("modes", ["full"])[0], config["finetune"].get("augment_presets", ["current"])[0]

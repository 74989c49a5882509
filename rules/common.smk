# Paths, job lists and parameter helpers shared by all rules (no rules here).
import json
import shlex
from pathlib import Path

from cxrmim.config import check_consistency
from cxrmim.data.splits import fraction_tag as tag  # one spelling of numbers in file names, shared with the package

check_consistency(config)  # what the schema cannot check (patch size vs image size), before any job runs

RESULTS = f"results/{config['dataset']['name']}"
RESOURCES_DIR = f"resources/{config['dataset']['name']}"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
PRETRAINED = ("rgmim", "mae")


def script(name):
    """A stage script as an input, so editing it reruns the rule (shell-called scripts are not tracked otherwise)."""
    return workflow.source_path(f"../scripts/{name}")


def package_code(*parts):
    """Package modules a stage runs, as inputs, so editing them reruns that stage (imported code is not tracked)."""
    root = Path(workflow.basedir) / "src" / "cxrmim"
    files = []
    for part in parts:
        path = root / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [str(f) for f in files]


def as_json(value):
    """Shell-quoted JSON of a config section for a script's --settings argument (also the tracked param)."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def section(name, drop=()):
    """A config section without the keys that only choose which jobs exist (so adding jobs reruns nothing)."""
    return {k: v for k, v in config[name].items() if k not in drop}


def run_name(method, ratio, encoder=None):
    """Folder name of one pretraining run."""
    return f"{method}_r{tag(ratio)}_{encoder or config['pretrain']['encoder']}"


def init_name(init):
    """Concrete fine-tuning initialisation for a config entry (rgmim/mae use the main masking ratio)."""
    return run_name(init, config["pretrain"]["mask_ratio"]) if init in PRETRAINED else init


def check_inits():
    """Fail at DAG construction with a clear message when an init cannot be built."""
    encoders = config["encoders"]
    for init in config["finetune"]["inits"]:
        if init in PRETRAINED:
            if init not in config["pretrain"]["methods"]:
                raise ValueError(f"finetune.inits has {init!r} but pretrain.methods does not; add it there")
            continue
        kind, _, encoder = init.partition("_")
        if encoder not in encoders:
            raise ValueError(f"finetune.inits has {init!r} but encoders has no {encoder!r}; "
                             f"known encoders: {sorted(encoders)}")
        if kind == "imagenet" and not (config["finetune"].get("imagenet_weights") or {}).get(encoder):
            raise ValueError(f"finetune.inits has {init!r}: set finetune.imagenet_weights.{encoder} to a local "
                             "weights file (no downloads at run time), or remove it from finetune.inits")
    if config["pretrain"]["encoder"] not in encoders:
        raise ValueError(f"pretrain.encoder {config['pretrain']['encoder']!r} is not in encoders")


check_inits()
FRACTIONS = [tag(f) for f in config["label_fractions"]["fractions"]]
SEEDS = [int(s) for s in config["label_fractions"]["seeds"]]
MAIN_INITS = [init_name(i) for i in config["finetune"]["inits"]]
RATIO_RUNS = [run_name(m, r) for m in config["pretrain"]["methods"]
              for r in sorted(set(config["pretrain"].get("mask_ratios", [])) | {config["pretrain"]["mask_ratio"]})]
PRETRAIN_RUNS = sorted(set(RATIO_RUNS) | {i for i in MAIN_INITS if i.startswith(PRETRAINED)})


def finetune_dirs():
    """Every fine-tuning run: main inits at every fraction, and each masking ratio at 100% labels."""
    runs = {(i, f, s) for i in MAIN_INITS for f in FRACTIONS for s in SEEDS}
    runs |= {(r, "1", s) for r in RATIO_RUNS for s in SEEDS}
    return [f"{RESULTS}/finetune/{i}/frac{f}_seed{s}" for i, f, s in sorted(runs)]


def finetune_metrics():
    """metrics.json of every fine-tuning run."""
    return [f"{d}/metrics.json" for d in finetune_dirs()]


TABLES = ["label_fractions", "mask_ratio", "hyperparameters", "significance"]
RESULT_FIGURES = ["accuracy_vs_fraction", "auc_vs_fraction", "accuracy_vs_epoch", "accuracy_vs_mask_ratio",
                  "confusion_matrices"]
PRETRAIN_FIGURES = ["masking_illustration", "reconstructions", "pretrain_loss"]


def all_targets():
    """Everything `rule all` asks for."""
    return [f"{RESULTS}/report.html"]


def finetune_weights(wildcards):
    """Weights a fine-tuning run starts from: a pretrained encoder, a local ImageNet file, or none."""
    init = wildcards.init
    if init.startswith(PRETRAINED):
        return [f"{RESULTS}/pretrain/{init}/encoder.safetensors"]
    if init.startswith("imagenet_"):
        return [config["finetune"]["imagenet_weights"][init.partition("_")[2]]]
    return []


def encoder_of(init):
    """The `encoders` entry a fine-tuning init uses."""
    if init.startswith(PRETRAINED):
        return init.rsplit("_", 1)[1]
    return init.partition("_")[2]

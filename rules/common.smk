# Paths, job lists and parameter helpers shared by all rules (no rules here).
import json
import shlex
from pathlib import Path

from cxrmim.data.splits import fraction_tag as tag  # one spelling of numbers in file names, shared with the package
from cxrmim.inits import PRETRAIN_METHODS, REPORT_METHODS, parse_init, pretrain_run_name  # one spelling of run names (torch-free)

RESULTS = f"results/{config['dataset']['name']}"
RESOURCES_DIR = f"resources/{config['dataset']['name']}"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"


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


PRETRAIN_SEEDS = [int(s) for s in config["pretrain"]["seeds"]]


def run_names(method, ratio, encoder=None):
    """Folder names of one (method, ratio, encoder) pretraining, one per pretraining seed."""
    encoder = encoder or config["pretrain"]["encoder"]
    return [pretrain_run_name(method, ratio, encoder, seed) for seed in PRETRAIN_SEEDS]


def init_names(init):
    """Concrete fine-tuning inits for a config entry: one per pretraining seed for rgmim/mae (main ratio)."""
    return run_names(init, config["pretrain"]["mask_ratio"]) if init in PRETRAIN_METHODS else [init]


def check_inits():
    """Fail at DAG construction with a clear message when an init cannot be built."""
    encoders = config["encoders"]
    for init in config["finetune"]["inits"]:
        if init in PRETRAIN_METHODS:
            if init not in config["pretrain"]["methods"]:
                raise ValueError(f"finetune.inits has {init!r} but pretrain.methods does not; add it there")
            continue
        spec = parse_init(init)
        if spec.encoder_key not in encoders:
            raise ValueError(f"finetune.inits has {init!r} but encoders has no {spec.encoder_key!r}; "
                             f"known encoders: {sorted(encoders)}")
        if spec.kind == "imagenet" and not (config["finetune"].get("imagenet_weights") or {}).get(spec.encoder_key):
            raise ValueError(f"finetune.inits has {init!r}: set finetune.imagenet_weights.{spec.encoder_key} to a "
                             "local weights file (no downloads at run time), or remove it from finetune.inits")
    if config["pretrain"]["encoder"] not in encoders:
        raise ValueError(f"pretrain.encoder {config['pretrain']['encoder']!r} is not in encoders "
                         f"(known: {sorted(encoders)})")


check_inits()
FRACTIONS = [tag(f) for f in config["label_fractions"]["fractions"]]
SEEDS = [int(s) for s in config["label_fractions"]["seeds"]]
MAIN_INITS = [name for i in config["finetune"]["inits"] for name in init_names(i)]
RATIO_RUNS = [name for m in config["pretrain"]["methods"]
              for r in sorted(set(config["pretrain"].get("mask_ratios", [])) | {config["pretrain"]["mask_ratio"]})
              for name in run_names(m, r)]
PRETRAIN_RUNS = sorted(set(RATIO_RUNS) | {i for i in MAIN_INITS if parse_init(i).pretrained})


def finetune_dirs():
    """Every fine-tuning run: main inits at every fraction, and each masking ratio at 100% labels.

    A pretrained init exists once per pretraining seed, so its runs cross pretraining seeds with subset seeds.
    """
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
    spec = parse_init(wildcards.init)
    if spec.pretrained:
        return [f"{RESULTS}/pretrain/{wildcards.init}/encoder.safetensors"]
    if spec.kind == "imagenet":
        return [config["finetune"]["imagenet_weights"][spec.encoder_key]]
    return []


def encoder_of(init):
    """The `encoders` entry a fine-tuning init uses."""
    return parse_init(init).encoder_key

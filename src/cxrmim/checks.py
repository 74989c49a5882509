"""The cross-checks that refuse a config before any job runs (the schema checks each value on its own).

Torch-free: `cxrmim.plan.check` runs them while Snakemake builds the DAG. The dataset checks take one dataset's
view (`cxrmim.experiment.Experiment.view`), so each dataset of an experiment is checked as a one-dataset config is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrmim import registry
from cxrmim.external_formats import resolve_external
from cxrmim.inits import InitSpec, parse_init


def encoder_key(config: dict[str, Any], spec: InitSpec) -> str:
    """The `encoders` key of an init: the one in its name, or its `entries` entry's `encoder`."""
    return config[spec.entries][spec.entry]["encoder"] if spec.entries else spec.encoder_key


def check_dataset_options(config: dict[str, Any]) -> None:
    """No `dataset.<key>` that only other kinds read is set away from its default (it would be silently unused);
    a per-finding `dataset.uncertain` names only findings of the task."""
    from cxrmim.data.kinds import foreign_options
    from cxrmim.data.uncertain import check_uncertain

    dataset = config["dataset"]
    foreign = foreign_options(dataset)
    if foreign:
        readers = {k.name for k in registry.DATASET_KINDS for key, _ in k.options if key in foreign}
        raise ValueError(
            f"dataset.{', dataset.'.join(foreign)} set, but kind {dataset['kind']} does not read it "
            f"(only {', '.join(sorted(readers))}); remove it or fix dataset.kind"
        )
    check_uncertain(dataset)
    check_segment(dataset)


SEGMENTS = ("lung", "lesion")


def check_segment(dataset: dict[str, Any]) -> None:
    """`dataset.segment` names a known mask, is set only for a segmentation task, and is only a mask the kind brings:
    `lesion` needs registry.DATASET_KINDS `lesion_masks`, `lung` (the default) a kind with lung masks."""
    segment = dataset.get("segment")
    if segment is None and dataset.get("task") != "segmentation":
        return
    segment = segment or "lung"
    if segment not in SEGMENTS:
        raise ValueError(f"dataset.segment {segment!r}: use one of {list(SEGMENTS)}")
    task = dataset.get("task") or "multiclass"
    if task != "segmentation" and segment != "lung":  # lung is the default: harmless anywhere
        raise ValueError(
            f"dataset.segment: {segment} is set but dataset.task is {task}; set dataset.task: segmentation "
            "or remove dataset.segment"
        )
    kind = registry.dataset_kind(dataset["kind"])
    if task == "segmentation" and segment == "lung" and not kind.segmenter_source:  # its masks.npy is all empty
        fix = "dataset.segment: lesion" if kind.lesion_masks else "a kind with lung masks"
        raise ValueError(
            f"dataset {dataset.get('name')!r}: task segmentation of lung masks (dataset.segment: lung, the default), "
            f"but kind {kind.name} comes without lung masks; use {fix}"
        )
    if segment == "lesion" and not kind.lesion_masks:
        kinds = [k.name for k in registry.DATASET_KINDS if k.lesion_masks]
        lung = "dataset.segment: lung (its lung masks), or " if kind.segmenter_source else ""
        raise ValueError(
            f"dataset.segment: lesion, but kind {dataset['kind']} (dataset {dataset.get('name')!r}) has no lesion "
            f"masks (only {', '.join(kinds)} do); use {lung}a kind with lesion masks"
        )


def check_reports(config: dict[str, Any]) -> None:
    """Methods that learn from reports (and so the tokenizer) are asked for only on a corpus with reports; `config`
    is the corpus's view."""
    from cxrmim.data.kinds import has_reports

    asked = [*config["pretrain"]["methods"], *config["finetune"]["inits"]]
    readers = [m for m in dict.fromkeys(asked) if m in registry.BY_NAME and registry.method(m).reads_reports]
    dataset = config["dataset"]
    if not readers or has_reports(dataset) is not False:
        return
    why = "its manifest has no report column" if dataset["kind"] == "manifest" else f"kind {dataset['kind']}"
    raise ValueError(
        f"{', '.join(readers)} learn from report text, but dataset {dataset['name']!r} has no reports ({why}); "
        f"drop {', '.join(readers)} from pretrain.methods and finetune.inits, or pretrain on a corpus with reports "
        "(mimic_cxr_jpg, a manifest with a report column, or the phantoms)"
    )


def check_methods(config: dict[str, Any]) -> None:
    """Each list of methods holds only methods of its family (the schema enums come from the same registry)."""
    lists = {"pretrain.methods": config["pretrain"]["methods"],
             "contrastive.methods": (config.get("contrastive") or {}).get("methods") or []}  # fmt: skip
    for where, names in lists.items():
        for name in names:
            if registry.method(name).listed_in != where:
                raise ValueError(f"{where} has {name!r}, a {registry.method(name).family} method; "
                                 f"list it under {registry.method(name).listed_in}")  # fmt: skip


def check_inits(config: dict[str, Any]) -> None:
    """Every `finetune.inits` entry can be built: its method is configured, its encoder and weights exist."""
    encoders, finetune = config["encoders"], config["finetune"]
    for init in finetune["inits"]:
        if init in registry.BY_NAME:
            where = registry.method(init).listed_in
            block, key = where.split(".")
            if init not in ((config.get(block) or {}).get(key) or []):
                raise ValueError(f"finetune.inits has {init!r} but {where} does not; add it there")
            continue
        spec = parse_init(init)
        if spec.entries:
            check_entry(config, spec)
            continue
        if spec.encoder_key not in encoders:
            raise ValueError(
                f"finetune.inits has {init!r} but encoders has no {spec.encoder_key!r}; "
                f"known encoders: {sorted(encoders)}"
            )
        if spec.weights_key and not (finetune.get(spec.weights_key) or {}).get(spec.encoder_key):
            raise ValueError(
                f"finetune.inits has {init!r}: set finetune.{spec.weights_key}.{spec.encoder_key} to a "
                "local weights file (no downloads at run time), or remove it from finetune.inits"
            )
    if config["pretrain"]["encoder"] not in encoders:
        encoder = config["pretrain"]["encoder"]
        raise ValueError(f"pretrain.encoder {encoder!r} is not in encoders (known: {sorted(encoders)})")


def check_entry(config: dict[str, Any], spec: InitSpec) -> None:
    """An init named by a config entry (a published encoder) has its entry, a known format, an `encoders`
    architecture and its file in place."""
    entries = config.get(spec.entries) or {}
    if spec.entry not in entries:
        raise ValueError(
            f"finetune.inits has {spec.name!r} but {spec.entries} has no {spec.entry!r}; "
            f"known {spec.entries}: {sorted(entries)}"
        )
    entry = entries[spec.entry]
    if spec.kind == "external":  # the one entries kind today: a known format, an input norm where it has none
        resolve_external(spec.entry, entry)
    where = f"{spec.entries}.{spec.entry}"
    if entry["encoder"] not in config["encoders"]:
        raise ValueError(
            f"{where}.encoder {entry['encoder']!r} is not in encoders; add an entry with the "
            f"checkpoint's architecture (known: {sorted(config['encoders'])})"
        )
    if not Path(entry["path"]).exists():
        raise FileNotFoundError(
            f"{where}.path {entry['path']} does not exist; point it at the downloaded "
            f"checkpoint, or remove {spec.name} from finetune.inits"
        )


def check_contrastive(config: dict[str, Any]) -> None:
    """Every joint-embedding method has its settings block and every contrastive encoder is an `encoders` key."""
    contrastive = config.get("contrastive") or {}
    for method in contrastive.get("methods") or []:
        if not contrastive.get(method):
            raise ValueError(f"contrastive.methods has {method!r} but contrastive.{method} (its settings) is missing")
    for encoder in contrastive.get("encoders") or []:
        if encoder not in config["encoders"]:
            raise ValueError(
                f"contrastive.encoders has {encoder!r} but encoders has no such key; "
                f"known encoders: {sorted(config['encoders'])}"
            )

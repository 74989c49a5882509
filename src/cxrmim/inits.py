"""Names of pretraining runs and fine-tuning initialisations: one spelling shared by the DAG, training and tables.

Torch-free on purpose: `rules/common.smk` imports it while Snakemake builds the DAG.

- pretraining run / pretrained init: `<method>_r<ratio>_<encoder>_s<pretrain seed>`, e.g. `rgmim_r0.75_vit-cpu_s0`;
- contrastive run / init (no masking ratio): `<method>_<encoder>_s<pretrain seed>`, e.g. `simsiam_resnet10t_s0`;
- baselines (`cxrmim.registry.INIT_KINDS`): `scratch_<encoder>`, `imagenet_<encoder>`, ...; a kind with
  `entries` is named by a key of that config mapping instead: `external_<external_inits key>` (published encoders).
Encoder keys (the `encoders:` entries) use letters, digits and hyphens; method names letters, digits and hyphens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxrmim import registry
from cxrmim.data.splits import fraction_tag

# Derived from cxrmim.registry (declare a method or init kind there, not here).
PRETRAIN_METHODS = {m.name: m.label for m in registry.METHODS}  # method -> its table label
REPORT_METHODS = registry.methods(reads_reports=True)  # they need the tokenizer stage's output
CONTRASTIVE_METHODS = registry.methods(registry.JOINT)  # two augmented views, no masking ratio
MASKED_METHODS = tuple(m.name for m in registry.METHODS if m.has_mask_ratio)  # masked and report-aware
BASELINES = {k.name: k.label for k in registry.INIT_KINDS}
INIT_KINDS = {k.name: k for k in registry.INIT_KINDS}
METHOD_LABELS = registry.labels()
NAME_PART = r"[A-Za-z0-9][A-Za-z0-9-]*"  # encoder keys and method names: no '_' (it separates the fields)
PRETRAINED_INIT = re.compile(rf"^(?P<method>{NAME_PART})_r(?P<ratio>[0-9.]+)_(?P<encoder>{NAME_PART})_s(?P<seed>\d+)$")
CONTRASTIVE_INIT = re.compile(rf"^(?P<method>{NAME_PART})_(?P<encoder>{NAME_PART})_s(?P<seed>\d+)$")


def pretrain_run_name(method: str, mask_ratio: float | str | None, encoder: str, seed: int | str) -> str:
    """Folder name of one pretraining run, which is also the fine-tuning init that starts from it.

    Masked methods need a ratio; contrastive methods (`CONTRASTIVE_METHODS`) have none and take None.
    """
    if method in CONTRASTIVE_METHODS:
        if mask_ratio is not None:
            raise ValueError(f"{method} has no masking ratio (got {mask_ratio!r}); pass None")
        return f"{method}_{encoder}_s{int(seed)}"
    if mask_ratio is None:
        raise ValueError(f"{method} is a masked-image method: its run name needs a masking ratio")
    return f"{method}_r{fraction_tag(float(mask_ratio))}_{encoder}_s{int(seed)}"


@dataclass(frozen=True)
class InitSpec:
    """What an init name means: where the weights come from and how the run is labelled in tables."""

    name: str
    kind: str  # a registry method name or init kind (scratch, imagenet, ...)
    encoder_key: str  # key of the `encoders:` entry the name refers to; "" for an `entries` kind (its entry says)
    mask_ratio: float | None = None
    pretrain_seed: int | None = None
    entry: str | None = None  # key of its `entries` mapping (e.g. external_inits) for such a kind

    @property
    def method(self) -> str:
        """Method label as in the paper's Table 2."""
        return METHOD_LABELS[self.kind]

    @property
    def pretrained(self) -> bool:
        """Starts from a pretraining run of this workflow."""
        return self.kind in PRETRAIN_METHODS

    @property
    def weights_key(self) -> str | None:
        """`finetune.<key>` mapping encoder keys to its local weights file (ImageNet, ...); None for the others."""
        return None if self.pretrained else INIT_KINDS[self.kind].weights_key

    @property
    def entries(self) -> str | None:
        """The config mapping (e.g. `external_inits`) whose entry `entry` defines this init; None for the others."""
        return None if self.pretrained else INIT_KINDS[self.kind].entries

    @property
    def needs_weights(self) -> bool:
        """Everything except training from scratch starts from a weights file."""
        return self.pretrained or self.weights_key is not None or self.entries is not None


def parse_init(name: str) -> InitSpec:
    """Parse `<method>_r<ratio>_<encoder>_s<seed>`, `<method>_<encoder>_s<seed>` (contrastive) or
    `<init kind>_<key>` (scratch, imagenet, external, ...)."""
    match = PRETRAINED_INIT.match(name)
    if match and match["method"] in MASKED_METHODS:
        return InitSpec(name, match["method"], match["encoder"], float(match["ratio"]), int(match["seed"]))
    match = CONTRASTIVE_INIT.match(name)
    if match and match["method"] in CONTRASTIVE_METHODS:
        return InitSpec(name, match["method"], match["encoder"], None, int(match["seed"]))
    kind, _, key = name.partition("_")
    if kind in BASELINES and re.fullmatch(NAME_PART, key):
        if INIT_KINDS[kind].entries:  # the architecture is the entry's `encoder`, known only from the config
            return InitSpec(name, kind, "", entry=key)
        return InitSpec(name, kind, key)
    kinds = [f"{k.name}_<{k.entries + ' key' if k.entries else 'encoder'}>" for k in registry.INIT_KINDS]
    raise ValueError(
        f"unknown init {name!r}: expected <{'|'.join(MASKED_METHODS)}>_r<ratio>_<encoder>_s<seed>, "
        f"<{'|'.join(CONTRASTIVE_METHODS)}>_<encoder>_s<seed> or {', '.join(kinds)} "
        "(keys: letters, digits, hyphens)"
    )


def init_name_pattern() -> str:
    """The schema's `finetune.inits` item pattern: a method, or `<init kind>_<key>` (from the registry)."""
    kinds = "|".join(f"{k.name}_{NAME_PART}" for k in registry.INIT_KINDS)
    return f"^({'|'.join(PRETRAIN_METHODS)}|{kinds})$"

"""Names of pretraining runs and fine-tuning initialisations: one spelling shared by the DAG, training and tables.

Torch-free on purpose: `rules/common.smk` imports it while Snakemake builds the DAG.

- pretraining run / pretrained init: `<method>_r<ratio>_<encoder>_s<pretrain seed>`, e.g. `rgmim_r0.75_vit-cpu_s0`;
- contrastive run / init (no masking ratio): `<method>_<encoder>_s<pretrain seed>`, e.g. `simsiam_resnet10t_s0`;
- baselines: `scratch_<encoder>` and `imagenet_<encoder>`;
- published encoders: `external_<key>`, the key of an `external_inits:` entry (see the block at the end).
Encoder keys (the `encoders:` entries) use letters, digits and hyphens; method names letters, digits and hyphens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxrmim.data.splits import fraction_tag

# Pretraining methods -> the method label of the paper's Table 2 (the row label in every table and figure).
PRETRAIN_METHODS = {
    "rgmim": "RGMIM",
    "rgmim-lung": "RGMIM-lung",
    "mae": "MAE",
    "mrm": "MRM",
    "mrm-noreport": "MRM w/o report",
    "mrm-nosr": "MRM w/o SR",
    "medim": "MedIM",
    "simsiam": "SimSiam",
    "byol": "BYOL",
}
# Methods that read the reports (they need the tokenizer stage's output).
REPORT_METHODS = ("mrm", "mrm-nosr", "medim")
# Joint-embedding (contrastive / self-distillation) methods: two augmented views, no masking ratio.
CONTRASTIVE_METHODS = ("simsiam", "byol")
MASKED_METHODS = tuple(m for m in PRETRAIN_METHODS if m not in CONTRASTIVE_METHODS)
BASELINES = {"scratch": "From Scratch", "imagenet": "Transfer"}
METHOD_LABELS = PRETRAIN_METHODS | BASELINES
NAME_PART = r"[A-Za-z0-9][A-Za-z0-9-]*"  # encoder keys and method names: no '_' (it separates the fields)
PRETRAINED_INIT = re.compile(
    rf"^(?P<method>{NAME_PART})_r(?P<ratio>[0-9.]+)_(?P<encoder>{NAME_PART})_s(?P<seed>\d+)$"
)
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
    kind: str  # a PRETRAIN_METHODS key, scratch or imagenet
    encoder_key: str  # key of the `encoders:` entry the name refers to
    mask_ratio: float | None = None
    pretrain_seed: int | None = None

    @property
    def method(self) -> str:
        """Method label as in the paper's Table 2."""
        return METHOD_LABELS[self.kind]

    @property
    def pretrained(self) -> bool:
        """Starts from a pretraining run of this workflow."""
        return self.kind in PRETRAIN_METHODS

    @property
    def external(self) -> str | None:
        """The `external_inits:` key of a published encoder; None for every other init."""
        return self.name[len(EXTERNAL_PREFIX):] if self.kind == EXTERNAL_KIND else None

    @property
    def needs_weights(self) -> bool:
        """Everything except training from scratch starts from a weights file."""
        return self.kind != "scratch"


def parse_init(name: str) -> InitSpec:
    """Parse `<method>_r<ratio>_<encoder>_s<seed>`, `<method>_<encoder>_s<seed>` (contrastive),
    `scratch_<encoder>` or `imagenet_<encoder>`."""
    external = parse_external(name)
    if external is not None:
        return external
    match = PRETRAINED_INIT.match(name)
    if match and match["method"] in MASKED_METHODS:
        return InitSpec(name, match["method"], match["encoder"], float(match["ratio"]), int(match["seed"]))
    match = CONTRASTIVE_INIT.match(name)
    if match and match["method"] in CONTRASTIVE_METHODS:
        return InitSpec(name, match["method"], match["encoder"], None, int(match["seed"]))
    kind, _, encoder_key = name.partition("_")
    if kind in BASELINES and re.fullmatch(NAME_PART, encoder_key):
        return InitSpec(name, kind, encoder_key)
    raise ValueError(
        f"unknown init {name!r}: expected <{'|'.join(MASKED_METHODS)}>_r<ratio>_<encoder>_s<seed>, "
        f"<{'|'.join(CONTRASTIVE_METHODS)}>_<encoder>_s<seed>, scratch_<encoder>, imagenet_<encoder> or "
        "external_<external_inits key> "
        "(encoder keys: letters, digits, hyphens)"
    )


# --- External inits (issue #22): published encoders named in `external_inits:` (cxrmim.external_formats). ---
# The encoder architecture is the entry's `encoder`, known only from the config: encoder_key stays empty here.
EXTERNAL_KIND = "external"
EXTERNAL_PREFIX = "external_"
METHOD_LABELS[EXTERNAL_KIND] = "External"  # fallback; a run's table label is the entry's `label`


def parse_external(name: str) -> InitSpec | None:
    """`external_<key>` -> its InitSpec (kind external); None for any other name."""
    key = name[len(EXTERNAL_PREFIX):] if name.startswith(EXTERNAL_PREFIX) else None
    if key is None or not re.fullmatch(NAME_PART, key):
        return None
    return InitSpec(name, EXTERNAL_KIND, encoder_key="")

"""What each pretraining method, init kind, dataset kind, augmentation preset and fine-tuning mode is, said once.

Torch-free on purpose: the DAG (`cxrmim.plan`, `rules/`), the schema test, argparse choices, tables and figures
read it while nothing heavy is imported. A method's `TrainingMethod` is named by a dotted path (`builder`) that
training resolves only when it runs, so adding a method is one new module plus one entry in `METHODS`
(docs/architecture.md, "Adding a method").
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

MASKED, REPORT, JOINT = "masked", "report-aware", "joint-embedding"
FAMILIES = (MASKED, REPORT, JOINT)
# Files every pretraining run writes, by the name the pretraining rules give each output (the loop writes
# history.csv; timm/ is the encoder as a timm folder: timm.create_model("local-dir:<run>/timm", pretrained=True)).
# Masked and report-aware runs add the whole autoencoder that the reconstruction figures load.
RUN_FILES = {"encoder": "encoder.safetensors", "history": "history.csv", "timm_config": "timm/config.json",
             "timm_weights": "timm/model.safetensors"}  # fmt: skip
AUTOENCODER_FILE = "autoencoder.safetensors"


@dataclass(frozen=True)
class Method:
    """One pretraining method: its spellings, family, config place, how to build it and how figures draw it."""

    name: str  # config and run-name spelling: letters, digits, hyphens (no '_', it separates run-name fields)
    label: str  # the row label of every table and figure (the paper's Table 2)
    family: str  # MASKED, REPORT or JOINT
    builder: str  # "module:function" returning its TrainingMethod; resolved at training time only
    colour: str  # its colour in every figure
    masking: str | None = None  # masking strategy (cxrmim.models.masking.MASKING) of a masked method
    reads_reports: bool = False  # needs the tokenizer rule's output and the prepared reports
    section: str | None = None  # its own config subsection, e.g. "pretrain.mrm", "contrastive.byol"
    options: tuple[tuple[str, Any], ...] = ()  # fixed switches the builder reads (MRM's ablations)
    figure: str | None = None  # report figure drawn from the first configured method that names it

    @property
    def has_mask_ratio(self) -> bool:
        """Masked and report-aware runs are named and trained per masking ratio; joint-embedding ones are not."""
        return self.family != JOINT

    @property
    def listed_in(self) -> str:
        """The config list that switches it on: `pretrain.methods` or `contrastive.methods`."""
        return "contrastive.methods" if self.family == JOINT else "pretrain.methods"

    @property
    def output_files(self) -> dict[str, str]:
        """Output name -> file of its run folder (the encoder first, then the autoencoder where there is one)."""
        encoder, *rest = RUN_FILES.items()
        autoencoder = [] if self.family == JOINT else [("autoencoder", AUTOENCODER_FILE)]
        return dict([encoder, *autoencoder, *rest])

    @property
    def outputs(self) -> tuple[str, ...]:
        """The files of its run folder."""
        return tuple(self.output_files.values())

    def option(self, key: str) -> Any:
        """One of `options`."""
        return dict(self.options)[key]


@dataclass(frozen=True)
class InitKind:
    """A fine-tuning init that is not a pretraining run of this workflow, named `<kind>_<key>`.

    The key is an `encoders` key, or, with `entries`, a key of that top-level config mapping, whose entry names
    the weights file (`path`), the architecture (`encoder`, an `encoders` key) and the row label (`label`).
    """

    name: str
    label: str  # table label (an `entries` kind: the fallback; each entry's own `label` names its rows)
    colour: str
    weights_key: str | None = None  # config mapping `finetune.<weights_key>.<encoder key>` -> a local weights file
    entries: str | None = None  # config mapping whose keys the name's suffix is (e.g. `external_inits`)


@dataclass(frozen=True)
class DatasetKind:
    """A `dataset.kind`: the function that reads it, the dataset keys it takes and what the dataset brings."""

    name: str
    reader: str | None  # "module:function"(root, options) -> data.kind_read.KindRead; None = generated (synthetic)
    options: tuple[tuple[str, Any], ...] = ()  # `dataset.<key>`s the reader takes, with their defaults
    label_files: str | None = None  # "module:function"(root, options) -> {role: Path | None}: its label CSVs
    check: str = "records"  # source check at DAG build: "records" reads every row, "files" finds the label files
    findings: bool = False  # labels are sets of findings: `dataset.findings` chooses which count
    has_reports: bool | None = False  # reports for the report-aware methods; None = the source says (its header)
    file_source: bool = False  # `dataset.source` is a file (a manifest CSV), image paths relative to its folder
    segmenter_source: bool = False  # may be a `lung_masks.train_sources` kind (it has lung masks)
    lesion_masks: bool = False  # prepare writes real lesion masks (`dataset.segment: lesion` may be fine-tuned)


@dataclass(frozen=True)
class Choice:
    """A named option with a one-line meaning (augmentation presets, fine-tuning modes)."""

    name: str
    meaning: str


# Declaration order is the order of rows in tables and of legends in figures (self-supervised methods first).
METHODS = (
    Method("rgmim", "RGMIM", MASKED, "cxrmim.train.mim:build", "#d62728", masking="region"),
    Method("rgmim-lung", "RGMIM-lung", MASKED, "cxrmim.train.mim:build", "#ff7f0e", masking="lung_ratio"),
    Method("mae", "MAE", MASKED, "cxrmim.train.mim:build", "#1f77b4", masking="random"),
    Method("mrm", "MRM", REPORT, "cxrmim.train.mrm:build", "#fbafe4", masking="random", reads_reports=True,
           section="pretrain.mrm", options=(("report_loss", True), ("super_resolution", True)),
           figure="mrm_reconstructions"),
    Method("mrm-noreport", "MRM w/o report", REPORT, "cxrmim.train.mrm:build", "#ca9161", masking="random",
           section="pretrain.mrm", options=(("report_loss", False), ("super_resolution", True)),
           figure="mrm_reconstructions"),
    Method("mrm-nosr", "MRM w/o SR", REPORT, "cxrmim.train.mrm:build", "#029e73", masking="random",
           reads_reports=True, section="pretrain.mrm",
           options=(("report_loss", True), ("super_resolution", False)), figure="mrm_reconstructions"),
    Method("medim", "MedIM", REPORT, "cxrmim.train.medim:build", "#ece133", masking="report_guided",
           reads_reports=True, section="pretrain.medim", figure="medim_masks"),
    Method("skd", "SKD", JOINT, "cxrmim.train.contrastive:build", "#8c564b", section="contrastive.skd"),
    Method("cross", "Cross", JOINT, "cxrmim.train.contrastive:build", "#bcbd22", section="contrastive.cross"),
    Method("byol", "BYOL", JOINT, "cxrmim.train.contrastive:build", "#9467bd", section="contrastive.byol"),
    Method("simsiam", "SimSiam", JOINT, "cxrmim.train.contrastive:build", "#17becf", section="contrastive.simsiam"),
)  # fmt: skip
INIT_KINDS = (
    InitKind("imagenet", "Transfer", "#2ca02c", weights_key="imagenet_weights"),
    # Published encoders (docs/external-encoders.md): `external_<external_inits key>`.
    InitKind("external", "External", "#000075", entries="external_inits"),
    InitKind("scratch", "From Scratch", "#7f7f7f"),
)
PUBLIC_OPTIONS = (("uncertain", "ignore"), ("labeler", "chexpert"))
DATASET_KINDS = (
    DatasetKind("synthetic", None, has_reports=True, segmenter_source=True, lesion_masks=True),
    DatasetKind("covid19_radiography", "cxrmim.data.sources:read_covid19_radiography", segmenter_source=True),
    DatasetKind("manifest", "cxrmim.data.sources:read_manifest", has_reports=None, file_source=True,
                segmenter_source=True),
    DatasetKind("mimic_cxr_jpg", "cxrmim.data.public:read_mimic", PUBLIC_OPTIONS,
                "cxrmim.data.public:mimic_files", check="files", findings=True, has_reports=True),
    DatasetKind("chexpert", "cxrmim.data.public:read_chexpert", PUBLIC_OPTIONS, "cxrmim.data.public:chexpert_files",
                check="files", findings=True),
    DatasetKind("nih_cxr14", "cxrmim.data.public:read_nih", PUBLIC_OPTIONS, "cxrmim.data.public:nih_files",
                check="files", findings=True),
    DatasetKind("rsna_pneumonia", "cxrmim.data.rsna:read_rsna", (), "cxrmim.data.rsna:rsna_files", check="files"),
    DatasetKind("siim_acr", "cxrmim.data.siim:read_siim", (), "cxrmim.data.siim:siim_files", check="files",
                lesion_masks=True),
    DatasetKind("covid_chestxray", "cxrmim.data.covid_chestxray:read_covid_chestxray", (("covid_task", "finding"), ("views", ())),
                "cxrmim.data.covid_chestxray:metadata_files"),
)  # fmt: skip
AUGMENT_PRESETS = (
    Choice("none", "no augmentation"),
    Choice("current", "crop_scale / hflip of finetune.augment"),
    Choice("classic", "random resized crop, flip, small rotation and contrast"),
    Choice("randaugment", "RandAugment, MAE's fine-tuning recipe"),
    Choice("native", "each model's own: randaugment for a ViT, classic for a CNN"),
)
FINETUNE_MODES = (Choice("full", "the whole network"), Choice("probe", "the head only, on a frozen encoder"))

BY_NAME = {m.name: m for m in METHODS}


def method(name: str) -> Method:
    """The registry entry of a method, with the known names in the error."""
    if name not in BY_NAME:
        raise ValueError(f"unknown pretraining method {name!r}; choose one of {list(BY_NAME)}")
    return BY_NAME[name]


def methods(family: str | None = None, *, reads_reports: bool | None = None) -> tuple[str, ...]:
    """Method names, in table order, of one family (or all) and optionally by whether they read reports."""
    return tuple(
        m.name
        for m in METHODS
        if (family is None or m.family == family) and (reads_reports is None or m.reads_reports == reads_reports)
    )


def names(choices: tuple[Choice, ...] | tuple[InitKind, ...] | tuple[DatasetKind, ...]) -> tuple[str, ...]:
    """The names of a registry table, in order."""
    return tuple(c.name for c in choices)


def labels() -> dict[str, str]:
    """Method or init-kind name -> table label."""
    return {m.name: m.label for m in METHODS} | {k.name: k.label for k in INIT_KINDS}


def label_order() -> list[str]:
    """Table labels in table order: the methods, then Transfer and From Scratch."""
    return [m.label for m in METHODS] + [k.label for k in INIT_KINDS]


def palette() -> dict[str, str]:
    """Table label -> colour, one per method and init kind."""
    return {m.label: m.colour for m in METHODS} | {k.label: k.colour for k in INIT_KINDS}


def place_label(label: str, init: str) -> str:
    """The registry label whose row order and colour a run takes: its own, or, for an init whose label comes from
    its config entry (a published encoder's `label`), its init kind's."""
    if label in labels().values():
        return label
    kind = init.partition("_")[0]
    return next((k.label for k in INIT_KINDS if k.name == kind and k.entries), label)


def own_sections(block: str = "pretrain") -> dict[str, str]:
    """Method -> the key of its own subsection inside one config block (`pretrain` -> {'mrm': 'mrm', ...})."""
    prefix = f"{block}."
    return {m.name: m.section[len(prefix) :] for m in METHODS if m.section and m.section.startswith(prefix)}


def load_builder(name: str) -> Any:
    """The `build(spec, data, run)` function of a method, imported now (so only training code calls this).

    `cxrmim.codebase` counts every builder module as imported by a file that calls this, so editing a method's
    module reruns its pretraining jobs.
    """
    module, _, attribute = method(name).builder.partition(":")
    return getattr(import_module(module), attribute)


def dataset_kind(name: str) -> DatasetKind:
    """The registry entry of a dataset kind, with the known kinds in the error."""
    kinds = {k.name: k for k in DATASET_KINDS}
    if name not in kinds:
        raise ValueError(f"unknown dataset.kind {name!r}; choose one of {list(kinds)}")
    return kinds[name]


def load_function(path: str) -> Any:
    """The function a registry entry names as "module:function", imported now."""
    module, _, attribute = path.partition(":")
    return getattr(import_module(module), attribute)


def load_reader(kind: str, what: str = "reader") -> Any:
    """A dataset kind's `reader` (or `label_files`) function, imported now (`cxrmim.codebase` counts its module)."""
    return load_function(getattr(dataset_kind(kind), what))


def reader_modules() -> tuple[str, ...]:
    """The modules the dataset kinds' readers and label-file finders live in."""
    paths = [p for k in DATASET_KINDS for p in (k.reader, k.label_files) if p]
    return tuple(dict.fromkeys(p.partition(":")[0] for p in paths))


def builder_modules() -> tuple[str, ...]:
    """The modules the methods' builders live in."""
    return tuple(dict.fromkeys(m.builder.partition(":")[0] for m in METHODS))

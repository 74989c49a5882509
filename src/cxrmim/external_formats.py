"""Published encoders as fine-tuning inits: the checkpoint formats, their authors' input and pooling conventions.

Torch-free on purpose: `cxrmim.plan.check` checks `external_inits:` entries with it while Snakemake builds the
DAG, and the tables stage writes each entry's resolved settings into Table 1. The loaders are in
`cxrmim.models.external`. Facts per format: ../shared/notes/published-encoders-and-protocols.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POOLS = ("avg", "avg-fcnorm", "token")  # ViT pooling; CNNs always use their own global average pooling
GREY_IMAGENET = {"mean": (0.485 + 0.456 + 0.406) / 3, "std": (0.229 + 0.224 + 0.225) / 3}  # RGB stats, summed stem
XRV_RANGE = {"mean": 0.5, "std": 1 / 2048}  # torchxrayvision: (2 * x / 255 - 1) * 1024 = (x / 255 - 0.5) * 2048


@dataclass(frozen=True)
class ExternalFormat:
    """How one published checkpoint format stores an encoder and what its authors feed it."""

    name: str
    description: str
    container: str | None  # top-level key holding the weights (None: the file is the state dict itself)
    drop: tuple[str, ...] = ()  # key prefixes the format carries but an encoder never uses (decoders, text, head)
    norm: dict[str, float] | None = None  # authors' grey input normalisation; None: must be configured
    pool: str = "avg"  # authors' ViT pooling
    prefix: str = ""  # key prefix of the encoder inside the container
    extra_top: tuple[str, ...] = ()  # other top-level keys the format is known to hold
    safe_globals: tuple[str, ...] = field(default=())  # pickled classes weights_only loading may rebuild


MAE_DECODER = ("decoder_", "mask_token")
FORMATS = {
    f.name: f
    for f in (
        ExternalFormat(
            "timm-folder",
            "timm local-dir / HF folder: config.json + model.safetensors",
            None,
            drop=("head.", "fc.", "classifier."),
        ),
        ExternalFormat(
            "timm", "plain timm state dict (.safetensors, .pth, .bin)", None, drop=("head.", "fc.", "classifier.")
        ),
        ExternalFormat(
            "mae",
            "FAIR MAE .pth ('model': encoder, or encoder + decoder for *_full)",
            "model",
            drop=MAE_DECODER + ("head.",),
            norm=GREY_IMAGENET,
            pool="avg-fcnorm",
        ),
        ExternalFormat(
            "medical-mae",
            "lambert-x/medical_mae ViT-S/ViT-B .pth (model/optimizer/epoch/scaler/args)",
            "model",
            drop=MAE_DECODER + ("head.",),
            norm={"mean": 0.5056, "std": 0.252},
            pool="avg-fcnorm",
            extra_top=("optimizer", "epoch", "scaler", "args"),
            safe_globals=("argparse.Namespace",),
        ),
        ExternalFormat(
            "mrm",
            "RL4M/MRM-pytorch MRM.pth (MAE layout plus bert_* report branch)",
            "model",
            drop=MAE_DECODER + ("bert_", "head."),
            norm={"mean": 0.4978, "std": 0.2449},
            pool="avg-fcnorm",
            extra_top=("optimizer", "epoch", "scaler", "args"),
            safe_globals=("argparse.Namespace",),
        ),
        ExternalFormat(
            "prefixed",
            "checkpoint whose encoder sits under a key prefix (MGCA/MedIM Lightning .ckpt)",
            "state_dict",
            drop=("head.", "fc."),
            norm={"mean": 0.5, "std": 0.5},
            pool="token",
            prefix="img_encoder_q.model.",
        ),
        ExternalFormat(
            "xrv-densenet",
            "torchxrayvision DenseNet-121 (torchvision names, 1-channel conv0)",
            None,
            drop=("classifier.", "op_threshs"),
            norm=XRV_RANGE,
        ),
    )
}


@dataclass(frozen=True)
class ExternalInit:
    """One `external_inits:` entry with the format's defaults filled in (what a fine-tuning run applies)."""

    key: str
    label: str
    path: str
    format: ExternalFormat
    encoder: str
    prefix: str
    container: str | None
    norm: dict[str, float]
    norm_source: str  # "format" (the authors' values), "config.json" (a timm folder's own) or "config"
    pool: str
    allow_pickle: bool

    def summary(self) -> dict[str, Any]:
        """What metrics.json records about the init (the file's name only: no local directories)."""
        return {
            "key": self.key,
            "label": self.label,
            "format": self.format.name,
            "file": Path(self.path).name,
            "encoder": self.encoder,
            "prefix": self.prefix or None,
            "pool": self.pool,
            "input_norm": {"mean": [self.norm["mean"]], "std": [self.norm["std"]]},
            "input_norm_source": self.norm_source,
            "allow_pickle": self.allow_pickle,
        }

    def text(self) -> str:
        """One line for Table 1."""
        return summary_text(self.summary())


def summary_text(summary: dict[str, Any]) -> str:
    """Table 1's line for an external init, from the summary its runs recorded in metrics.json."""
    prefix = f", prefix {summary['prefix']}" if summary.get("prefix") else ""
    norm = summary["input_norm"]
    return (
        f"{summary['format']} {summary['file']} as {summary['encoder']}{prefix}, pool {summary['pool']}, "
        f"input norm mean {norm['mean'][0]:g} std {norm['std'][0]:g} ({summary['input_norm_source']})"
    )


def resolve_external(key: str, entry: dict[str, Any]) -> ExternalInit:
    """Fill an entry's unset keys from its format; a format without known statistics needs `input_norm`."""
    fmt_name = entry.get("format")
    if fmt_name not in FORMATS:
        raise ValueError(f"external_inits.{key}.format {fmt_name!r} is unknown; use one of {sorted(FORMATS)}")
    fmt = FORMATS[fmt_name]
    norm = entry.get("input_norm")
    default, source = fmt.norm, "format"
    if norm is None and fmt.name == "timm-folder":
        default, source = folder_norm(key, Path(entry["path"])), "config.json"
    if norm is None and default is None:
        raise ValueError(
            f"external_inits.{key}: format {fmt.name} does not say how its inputs were normalised; set "
            f"external_inits.{key}.input_norm: {{mean: <grey mean>, std: <grey std>}} (the encoder's training "
            "statistics on images scaled to [0, 1])"
        )
    pool = entry.get("pool", fmt.pool)
    if pool not in POOLS:
        raise ValueError(f"external_inits.{key}.pool {pool!r}: use one of {list(POOLS)}")
    return ExternalInit(
        key=key,
        label=str(entry.get("label") or key),
        path=str(entry["path"]),
        format=fmt,
        encoder=str(entry["encoder"]),
        prefix=str(entry.get("prefix", fmt.prefix)),
        container=entry.get("container", fmt.container),
        norm={"mean": float((norm or default)["mean"]), "std": float((norm or default)["std"])},
        norm_source="config" if norm is not None else source,
        pool=pool,
        allow_pickle=bool(entry.get("allow_pickle", False)),
    )


def folder_norm(key: str, folder: Path) -> dict[str, float] | None:
    """A timm folder's own statistics from its config.json; RGB ones averaged, as for a summed 3-channel stem."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"external_inits.{key}.path: {config_path} not found; a timm-folder has config.json and model.safetensors"
        )
    config = json.loads(config_path.read_text())
    data = config.get("pretrained_cfg") or config
    if "mean" not in data or "std" not in data:
        return None
    return {"mean": sum(data["mean"]) / len(data["mean"]), "std": sum(data["std"]) / len(data["std"])}

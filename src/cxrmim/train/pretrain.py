"""The pretraining stage: builds any method of `cxrmim.registry` and trains it on the shared loop.

Each method is its own module (`cxrmim.train.mim`, `.mrm`, `.medim`, `.contrastive`) whose `build` the registry
names; the loop, checkpointing and distributed setup live in `cxrmim.train.loop`, `.checkpoint` and
`.distributed`, the data in `cxrmim.train.pretrain_data`. `main` is the entry point of both pretraining rules.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cxrmim import registry
from cxrmim.cli import parse_json_arg
from cxrmim.device import select_device
from cxrmim.optim import seed_everything
from cxrmim.train.distributed import distributed_session
from cxrmim.train.epoch import TrainingMethod
from cxrmim.train.launch import add_run_arguments, report_unfinished, start_run
from cxrmim.train.loop import LoopSettings, run_training
from cxrmim.train.method_base import PRETRAIN_UNSIGNED_KEYS, RunInputs
from cxrmim.train.mim import MASKING_COLUMNS
from cxrmim.train.pretrain_data import PretrainData, load_pretrain_data

log = logging.getLogger("cxrmim.pretrain")

HISTORY_COLUMNS = ["epoch", "loss", "lr", "images_per_s", *MASKING_COLUMNS, "seconds"]  # of a masked method
UNSIGNED_KEYS = PRETRAIN_UNSIGNED_KEYS


def build_method(name: str, data: PretrainData, run: RunInputs) -> TrainingMethod:
    """The `TrainingMethod` of any registry method, from the builder its entry names."""
    return registry.load_builder(name)(registry.method(name), data, run)


@dataclass
class PretrainResult:
    """What a call to `run_pretraining` did."""

    finished: bool
    history: list[dict[str, float]]
    model: nn.Module  # the method's own model: the MaskedAutoencoder, the MRM / MedIM model, the siamese pair
    out_dir: Path
    epochs_run: int = 0
    method: TrainingMethod | None = None  # the built method (its data, settings and outputs)


def run_pretraining(
    prepared_dir: str | Path,
    split_csv: str | Path,
    validity_npz: str | Path,
    method: str,
    mask_ratio: float | None,
    encoder_cfg: dict[str, Any],
    settings: dict[str, Any],
    out_dir: str | Path,
    stop_after_epochs: int | None = None,
    tokenizer: str | Path | None = None,
    text: dict[str, Any] | None = None,
) -> PretrainResult:
    """Pretrain any registry method, checkpointing every epoch to out_dir/checkpoint.pt and resuming from it.

    Joint-embedding methods take no `mask_ratio`; methods that read reports need `tokenizer` and `text` (the
    tokenizer rule's file and the `text:` config section).
    """
    spec = registry.method(method)  # an unknown name fails before any data is read
    setup = select_device(
        str(settings.get("device", "auto")),
        cpu_fallback=bool(settings.get("cpu_fallback", False)),
        fallback_key=f"{spec.section if spec.family == registry.JOINT else 'pretrain'}.cpu_fallback",
    )
    loop_settings = LoopSettings.from_settings(settings)
    # Every method trains on the same images: train + val of the split, lung-mask QC exclusions applied. Only the
    # masked family reads the lung masks (RGMIM's masking; MAE's visible-lung statistic); the others never open them.
    data = load_pretrain_data(prepared_dir, split_csv, validity_npz, lung_masks=spec.family == registry.MASKED)
    run = RunInputs(encoder_cfg, settings, mask_ratio, Path(prepared_dir), Path(tokenizer) if tokenizer else None, text)
    with distributed_session(setup.device.type) as ddp:
        seed_everything(loop_settings.seed)  # identical initial weights on every rank and every resume
        built = build_method(method, data, run)
        result = run_training(built, loop_settings, setup, ddp, Path(out_dir), stop_after_epochs)
    return PretrainResult(result.finished, result.history, built.core, Path(out_dir), result.epochs_run, built)


def parse_args(argv: list[str] | None = None, family: str | None = None) -> argparse.Namespace:
    """Command-line interface of the pretraining stages (`family`: only that family's methods are choices)."""
    names = registry.methods(family)
    parser = argparse.ArgumentParser(
        description=f"Pretraining ({', '.join(names)}) on the prepared chest X-ray cache (torchrun-compatible).",
    )
    parser.add_argument(
        "--prepared", required=True, help="prepared cache directory (images.npy, masks.npy, manifest.csv)"
    )
    parser.add_argument("--split", required=True, help="split.csv; images whose part is train or val are used")
    parser.add_argument("--validity", required=True, help="validity.npz of patch_validity (its QC exclusions apply)")
    parser.add_argument("--method", required=True, choices=names, help="a cxrmim.registry method")
    parser.add_argument(
        "--mask-ratio", type=float, default=None, help="share of patches to mask, e.g. 0.75 (not joint-embedding)"
    )
    add_run_arguments(parser, "JSON (inline or file) of `pretrain:` or `contrastive.<method>`")
    reading = ", ".join(registry.methods(reads_reports=True))
    parser.add_argument("--tokenizer", default=None, help=f"tokenizer JSON of the tokenizer rule ({reading})")
    parser.add_argument(
        "--text", default=None, help="JSON (inline or file) of the `text:` config section (report methods)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, family: str | None = None) -> int:
    """Entry point of scripts/pretrain.py (and, for the joint-embedding family, scripts/contrastive_pretrain.py)."""
    args = parse_args(argv, family)
    settings = start_run(args)
    result = run_pretraining(
        args.prepared, args.split, args.validity, args.method, args.mask_ratio,
        parse_json_arg(args.encoder), settings, args.out, args.stop_after_epochs,
        args.tokenizer, parse_json_arg(args.text) if args.text else None,
    )  # fmt: skip
    report_unfinished(result.finished)
    return 0

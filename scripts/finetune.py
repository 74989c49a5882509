#!/usr/bin/env python
"""CLI: fine-tune one init on one label subset and write metrics.json, history.csv, predictions.csv (segmentation:
also predicted_masks.npy)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

from cxrmim.cli import parse_json_arg, run_main, setup_logging
from cxrmim.inits import parse_init
from cxrmim.recipe import FinetuneSettings
from cxrmim.train.finetune import finetune
from cxrmim.train.finetune_augment import AUGMENT_PRESETS
from cxrmim.train.finetune_data import (
    TASKS,
    load_finetune_data,
    remove_outputs,
    write_result,
)
from cxrmim.train.finetune_task import FINETUNE_MODES
from cxrmim.train.segment_data import SEGMENTS, load_segment_data, write_segment_result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (settings JSON = the config's `finetune:` section)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, help="prepared cache directory")
    parser.add_argument("--split", required=True, help="split.csv (index,id,label,group,part)")
    parser.add_argument("--subset", required=True, help="label subset CSV (index,id,label)")
    parser.add_argument("--init", required=True, help="rgmim_r0.75_vit-b16_s0, scratch_vit-b16, imagenet_resnet50, ...")
    parser.add_argument("--encoder", required=True, help="JSON (inline or file) of the encoders: entry")
    parser.add_argument(
        "--weights",
        default=None,
        help="encoder.safetensors, or a local ImageNet weights file for timm (.safetensors/.pth)",
    )
    parser.add_argument("--external", default=None, help="JSON (inline or file) of the init's external_inits: entry")
    parser.add_argument("--patch-size", type=int, default=None, help="ViT patch size when the weights carry none")
    parser.add_argument("--settings", required=True, help="JSON (inline or file) of the finetune: section")
    parser.add_argument("--seed", type=int, required=True, help="label-fraction seed")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", help="label budget tag: frac<fraction> (frac0.1) or n<count> (n1000)")
    budget.add_argument("--fraction", type=float, help="label fraction (same as --budget frac<F>)")
    parser.add_argument("--mode", default=None, choices=FINETUNE_MODES, help="full network or linear probe")
    parser.add_argument("--augment", default=None, choices=AUGMENT_PRESETS, help="augmentation preset")
    parser.add_argument("--task", default="multiclass", choices=(*TASKS, "segmentation"), help="dataset.task")
    parser.add_argument(
        "--segment", default="lung", choices=SEGMENTS, help="dataset.segment: the masks a segmentation task learns"
    )
    parser.add_argument("--positive", default=None, help="dataset.positive: positive class of a binary task")
    parser.add_argument("--findings", default=None, help="JSON list: dataset.findings of a multilabel task")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--log", default=None, help="also log to this file")
    return parser.parse_args(argv)


def parse_budget(budget: str | None, fraction: float | None) -> tuple[str, float | None]:
    """The budget tag and its fraction (None for a count budget) from --budget or --fraction."""
    if budget is None:
        return f"frac{fraction:g}", fraction
    match = re.fullmatch(r"frac([0-9.]+)|n([0-9]+)", budget)
    if not match:
        raise ValueError(f"--budget {budget!r}: expected frac<fraction> (frac0.1) or n<count> (n1000)")
    return budget, float(match.group(1)) if match.group(1) else None


def main(argv: list[str] | None = None) -> None:
    """Run one fine-tuning job."""
    args = parse_args(argv)
    setup_logging(args.log)
    remove_outputs(args.out)
    init = parse_init(args.init)
    budget, fraction = parse_budget(args.budget, args.fraction)
    settings = FinetuneSettings.from_config(parse_json_arg(args.settings))
    settings = dataclasses.replace(settings, mode=args.mode or settings.mode, augment=args.augment or settings.augment)
    common = {
        "seed": args.seed,
        "fraction": fraction,
        "budget": budget,
        "weights": args.weights,
        "patch_size": args.patch_size,
        "external": parse_json_arg(args.external) if args.external else None,
    }
    if args.task == "segmentation":  # masks next to images.npy in --prepared (masks.npy or lesion_masks.npy)
        from cxrmim.train.segment_run import segment_finetune

        data = load_segment_data(args.prepared, args.split, args.subset, args.segment)
        segmented = segment_finetune(data, init, parse_json_arg(args.encoder), settings, **common)
        write_segment_result(segmented, args.out)
        return
    findings = json.loads(args.findings) if args.findings else None
    data = load_finetune_data(args.prepared, args.split, args.subset, args.task, args.positive, findings)
    result = finetune(data, init, parse_json_arg(args.encoder), settings, **common)
    write_result(result, args.out)


if __name__ == "__main__":
    run_main(main)

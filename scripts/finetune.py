#!/usr/bin/env python
"""CLI: fine-tune one init on one label subset and write metrics.json, history.csv, predictions.csv."""

from __future__ import annotations

import argparse

from cxrmim.cli import parse_json_arg, run_main, setup_logging
from cxrmim.inits import parse_init
from cxrmim.recipe import FinetuneSettings
from cxrmim.train.finetune import finetune
from cxrmim.train.finetune_data import load_finetune_data, remove_outputs, write_result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (settings JSON = the config's `finetune:` section)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, help="prepared cache directory")
    parser.add_argument("--split", required=True, help="split.csv (index,id,label,group,part)")
    parser.add_argument("--subset", required=True, help="label subset CSV (index,id,label)")
    parser.add_argument("--init", required=True, help="rgmim_r0.75_vit-b16_s0, scratch_vit-b16, imagenet_resnet50, ...")
    parser.add_argument("--encoder", required=True, help="JSON (inline or file) of the encoders: entry")
    parser.add_argument("--weights", default=None, help="encoder.safetensors, or a local ImageNet weights file for timm (.safetensors/.pth)")
    parser.add_argument("--patch-size", type=int, default=None, help="ViT patch size when the weights carry none")
    parser.add_argument("--settings", required=True, help="JSON (inline or file) of the finetune: section")
    parser.add_argument("--seed", type=int, required=True, help="label-fraction seed")
    parser.add_argument("--fraction", type=float, required=True)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--log", default=None, help="also log to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one fine-tuning job."""
    args = parse_args(argv)
    setup_logging(args.log)
    remove_outputs(args.out)
    init = parse_init(args.init)
    data = load_finetune_data(args.prepared, args.split, args.subset)
    result = finetune(
        data,
        init,
        parse_json_arg(args.encoder),
        FinetuneSettings.from_config(parse_json_arg(args.settings)),
        seed=args.seed,
        fraction=args.fraction,
        weights=args.weights,
        patch_size=args.patch_size,
    )
    write_result(result, args.out)


if __name__ == "__main__":
    run_main(main)

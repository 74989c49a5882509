"""A built encoder described in its own terms, from model_summary's record (no torch import: tables read it too)."""

from __future__ import annotations

from typing import Any


def model_description(summary: dict[str, Any]) -> str:
    """'vit_tiny_patch16_224: ViT, 4 blocks, width 128, 0.68 M parameters' or
    'resnet10t: CNN, 4 stages of 1-1-1-1 blocks, widths 32-64-128-256, 1.23 M parameters'."""
    parameters = f"{int(summary['n_parameters']) / 1e6:.2f} M parameters"
    if summary.get("depth") is not None:  # a transformer: its blocks and token width
        return (
            f"{summary['timm_name']}: ViT, {int(summary['depth'])} blocks, width {int(summary['width'])}, {parameters}"
        )
    stages = summary.get("stage_blocks") or []
    if not stages:  # recorded before stages were (or a CNN whose stages timm does not list)
        return f"{summary['timm_name']}: CNN, final width {int(summary['width'])}, {parameters}"
    blocks = "-".join(str(int(n)) for n in stages)
    widths = "-".join(str(int(w)) for w in summary.get("stage_widths") or [])
    return f"{summary['timm_name']}: CNN, {len(stages)} stages of {blocks} blocks, widths {widths}, {parameters}"

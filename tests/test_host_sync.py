"""No host synchronisation per training step: fine-tuning and the lung segmenter read the device once per epoch.

On CPU nothing would block, so the test counts where cxrmim code reads a tensor back to the host (.item(),
float(), .cpu(), ...): a read inside the step loop is hit at every step, per-epoch reads (the epoch's loss,
evaluation of val and test) a few times per epoch, far fewer than there are steps.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest
import torch
from test_finetune import PATCH, SETTINGS, TINY_VIT, make_cache

from cxrmim.device import select_device
from cxrmim.inits import parse_init
from cxrmim.recipe import FinetuneSettings
from cxrmim.segment.train import train_segmenter
from cxrmim.segment.training_data import load_training_sources
from cxrmim.train.finetune import finetune
from cxrmim.train.finetune_data import load_finetune_data

PACKAGE = str(Path(__file__).resolve().parents[1] / "src" / "cxrmim")
HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> collections.Counter:
    """Count host reads of tensors per calling line of cxrmim code."""
    counts: collections.Counter = collections.Counter()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, **kwargs):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(PACKAGE):
                counts[f"{caller.f_code.co_filename}:{caller.f_lineno}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return counts


SGD_RECIPE = {"optimizer": "sgd", "schedule": "step", "lr_steps": {"milestones": [0.5]}, "clip_grad": 1.0}


@pytest.mark.parametrize(
    ("task", "preset", "mode", "recipe"),
    [
        ("multiclass", "current", "full", {}),
        ("binary", "randaugment", "full", {}),
        ("binary", "classic", "probe", {}),
        ("multiclass", "current", "full", SGD_RECIPE),
    ],
)
def test_finetuning_reads_the_device_once_per_epoch_not_per_step(
    tmp_path: Path, host_reads, task: str, preset: str, mode: str, recipe: dict
) -> None:
    cache = make_cache(tmp_path, ["A", "B"], {"train": 16, "val": 4, "test": 4})
    data = load_finetune_data(cache["prepared"], cache["split"], cache["subset"], task, positive="B")
    settings = FinetuneSettings.from_config(
        {**SETTINGS, "epochs": 2, "batch_size": 4, "min_steps": 24, "augment_preset": preset, "mode": mode, **recipe}
    )
    result = finetune(data, parse_init("scratch_vit-tiny"), TINY_VIT, settings, seed=0, fraction=1.0, patch_size=PATCH)
    steps = result.metrics["steps"]
    assert steps == 24 and host_reads  # the counter sees the per-epoch reads
    per_step = {site: n for site, n in host_reads.items() if n >= steps}
    assert not per_step, f"host reads inside the training step: {per_step}"


def test_segmenter_reads_the_device_once_per_epoch_not_per_step(host_reads) -> None:
    data = load_training_sources([{"kind": "synthetic", "synthetic": {"n_images": 24, "image_size": 32}}], 32)
    settings = {
        "encoder": "resnet18",
        "decoder_channels": [16, 16, 8, 8],
        "image_size": 32,
        "epochs": 2,
        "batch_size": 4,
        "lr": 1e-3,
        "holdout_fraction": 0.0,
        "augment": {"crop_scale": [0.8, 1.0]},
    }
    trained = train_segmenter(data, settings, select_device("cpu"))
    assert len(trained.history) == 2 and host_reads
    steps = 2 * 24 // 4
    per_step = {site: n for site, n in host_reads.items() if n >= steps}
    assert not per_step, f"host reads inside the training step: {per_step}"

"""Masked image modeling pretraining: outputs, masking statistics, exact kill-and-resume, and torchrun DDP (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file

from cxrmim.data.validity import run_patch_validity
from cxrmim.train.loop import STOP_ENV
from cxrmim.train.pretrain import HISTORY_COLUMNS, main, run_pretraining

IMAGE_SIZE, PATCH_SIZE = 32, 8
TINY_ENCODER = {
    "timm_name": "vit_tiny_patch16_224",
    "kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0},
}


def tiny_settings(**overrides: object) -> dict:
    """A `pretrain:` section for a model that trains in well under a second per epoch."""
    settings = {
        "decoder": {"embed_dim": 16, "depth": 1, "num_heads": 2},
        "norm_pix_loss": False,
        "epochs": 3,
        "batch_size": 8,
        "effective_batch_size": 16,
        "base_lr": 1.5e-3,
        "weight_decay": 0.05,
        "betas": [0.9, 0.95],
        "warmup_epochs": 1,
        "augment": {"crop_scale": [0.8, 1.0], "hflip": True},
        "seed": 0,
        "device": "cpu",
        "compile": False,
        "num_workers": 0,
    }
    settings.update(overrides)
    return settings


def build_tiny_cache(root: Path, n_images: int = 40, threshold: float = 0.0) -> dict[str, Path]:
    """Prepared cache, split.csv and validity.npz with two elliptic 'lungs' per image; two images lack masks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    masks = np.zeros((n_images, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i in range(n_images):
        radius = rng.uniform(4, 9)  # some images have fewer lung patches than the masked count
        for centre_x in (IMAGE_SIZE * 0.3, IMAGE_SIZE * 0.7):
            masks[i] |= (((xx - centre_x) / radius) ** 2 + ((yy - IMAGE_SIZE / 2) / (1.6 * radius)) ** 2 <= 1).astype(
                np.uint8
            )
    images = np.clip(60 + 120 * masks + rng.normal(0, 20, masks.shape), 0, 255).astype(np.uint8)
    has_mask = np.ones(n_images, dtype=int)
    has_mask[:2] = 0
    masks[:2] = 0
    prepared = root / "prepared"
    prepared.mkdir(parents=True)
    np.save(prepared / "images.npy", images)
    np.save(prepared / "masks.npy", masks)
    ids = [f"img{i:03d}" for i in range(n_images)]
    labels = ["Normal", "COVID-19"] * (n_images // 2)
    pd.DataFrame(
        {
            "index": range(n_images),
            "id": ids,
            "label": labels,
            "source": "tiny",
            "group": ids,
            "view": "PA",
            "has_mask": has_mask,
            "report": "",
        }
    ).to_csv(prepared / "manifest.csv", index=False)
    parts = np.array(["train"] * n_images, dtype=object)
    parts[-8:] = "test"
    parts[-12:-8] = "val"
    split = root / "split.csv"
    pd.DataFrame({"index": range(n_images), "id": ids, "label": labels, "group": ids, "part": parts}).to_csv(
        split, index=False
    )
    validity = root / "validity.npz"
    run_patch_validity(
        prepared,
        {"patch_size": PATCH_SIZE, "threshold": threshold, "no_mask_policy": "all_valid", "n_figure_images": 1},
        validity,
        root / "validity.csv",
        root / "validity.png",
    )
    return {"prepared": prepared, "split": split, "validity": validity}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny cache shared by the tests of this module."""
    return build_tiny_cache(tmp_path_factory.mktemp("cache"))


def run(cache: dict[str, Path], out: Path, method: str = "rgmim", **kwargs: object):
    """Pretrain the tiny model in-process."""
    settings = kwargs.pop("settings", tiny_settings())
    return run_pretraining(
        cache["prepared"], cache["split"], cache["validity"], method, 0.75, TINY_ENCODER, settings, out, **kwargs
    )


@pytest.fixture(scope="module")
def cli_run(cache: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-epoch RGMIM run through the command-line entry point."""
    out = tmp_path_factory.mktemp("runs") / "rgmim_r0.75_vit"
    code = main(
        ["--prepared", str(cache["prepared"]), "--split", str(cache["split"]), "--validity", str(cache["validity"]),
         "--method", "rgmim", "--mask-ratio", "0.75", "--encoder", json.dumps(TINY_ENCODER),
         "--settings", json.dumps(tiny_settings()), "--out", str(out), "--log", str(out.parent / "log.txt")]
    )  # fmt: skip
    assert code == 0
    return out


def test_cli_run_writes_outputs_and_history(cli_run: Path) -> None:
    out = cli_run
    for name in ("encoder.safetensors", "autoencoder.safetensors", "history.csv"):
        assert (out / name).exists(), name
    assert not (out / "checkpoint.pt").exists()
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3]
    assert np.isfinite(history["loss"]).all()
    assert (history["fallback_count"] > 0).any()  # the small-lung images need the fallback
    assert history["fallback_fraction"].between(0, 1).all() and history["visible_lung_fraction"].between(0, 1).all()
    log_text = (out.parent / "log.txt").read_text()
    assert "device cpu" in log_text and "effective batch 16" in log_text and "encoder" in log_text


def test_run_encoder_loads_with_one_line_of_timm(cli_run: Path) -> None:
    import timm

    model = timm.create_model(f"local-dir:{cli_run / 'timm'}", pretrained=True, num_classes=3)
    encoder = load_file(cli_run / "encoder.safetensors")
    state = model.state_dict()
    assert set(encoder) == {k for k in state if not k.startswith("head.")}
    assert all(torch.equal(state[k], v) for k, v in encoder.items())
    assert timm.data.resolve_data_config({}, model=model)["input_size"][0] == 1


def test_random_masking_never_falls_back(cache: dict[str, Path], tmp_path: Path) -> None:
    result = run(cache, tmp_path / "mae", method="mae", settings=tiny_settings(epochs=1, augment=None))
    assert result.finished
    assert result.history[0]["fallback_count"] == 0
    assert 0.1 < result.history[0]["visible_lung_fraction"] < 0.4  # random masking: about 1 - 0.75 of the lung


def test_the_two_readings_of_rgmim_differ_in_the_lung_they_show(tmp_path: Path) -> None:
    # A patch counts as lung when half of it is lung: 1 to 12 of 16 patches, fewer than the 12 masked ones.
    cache = build_tiny_cache(tmp_path / "cache", threshold=0.5)
    settings = tiny_settings(epochs=1, augment=None)
    region = run(cache, tmp_path / "rgmim", method="rgmim", settings=settings).history[0]
    lung = run(cache, tmp_path / "rgmim-lung", method="rgmim-lung", settings=settings).history[0]
    # Region masking hides every lung patch of most images; lung-ratio masking keeps about 1 - 0.75 visible.
    assert region["fallback_fraction"] > 0.5 and region["visible_lung_fraction"] < 0.1
    assert 0.2 < lung["visible_lung_fraction"] < 0.3
    # Two images without masks are all valid (12 masked), so the others pad their masks outside the lung.
    assert lung["fallback_fraction"] > 0.5


def test_kill_and_resume_gives_identical_weights(cache: dict[str, Path], tmp_path: Path) -> None:
    straight = run(cache, tmp_path / "straight")
    killed = run(cache, tmp_path / "resumed", stop_after_epochs=1)
    assert not killed.finished and not (tmp_path / "resumed" / "encoder.safetensors").exists()
    resumed = run(cache, tmp_path / "resumed")
    assert resumed.finished and resumed.epochs_run == 2
    expected = load_file(tmp_path / "straight" / "autoencoder.safetensors")
    actual = load_file(tmp_path / "resumed" / "autoencoder.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]
    # Finished runs drop their checkpoint, so a rerun (e.g. after the inputs changed) trains afresh.
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()


def cli_args(cache: dict[str, Path], out: Path, log: Path, **overrides: object) -> list[str]:
    """scripts/pretrain.py arguments for the tiny RGMIM run."""
    return [
        "--prepared",
        str(cache["prepared"]),
        "--split",
        str(cache["split"]),
        "--validity",
        str(cache["validity"]),
        "--method",
        "rgmim",
        "--mask-ratio",
        "0.75",
        "--encoder",
        json.dumps(TINY_ENCODER),
        "--settings",
        json.dumps(tiny_settings(**overrides)),
        "--out",
        str(out),
        "--log-file",
        str(log),
    ]


def launch(args: list[str], processes: int) -> str:
    """Run scripts/pretrain.py as the workflow does: plain python, or torchrun with 2 CPU ranks (gloo)."""
    script = str(REPO / "scripts" / "pretrain.py")
    if processes == 1:
        command = [sys.executable, script, *args]
    else:
        torchrun = str(Path(sys.executable).parent / "torchrun")
        command = [torchrun, "--standalone", "--nnodes", "1", "--nproc_per_node", str(processes), script, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    env.pop(STOP_ENV, None)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{command[:6]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout + result.stderr


@pytest.mark.parametrize(("first", "then"), [(2, 1), (1, 2)])
def test_torchrun_ddp_resumes_with_another_number_of_processes(
    cache: dict[str, Path], tmp_path: Path, first: int, then: int
) -> None:
    out = tmp_path / "run"
    launch([*cli_args(cache, out, tmp_path / "first.log", epochs=2), "--stop-after-epochs", "1"], first)
    assert (out / "checkpoint.pt").exists() and not (out / "encoder.safetensors").exists()
    assert f"{first} rank(s)" in (tmp_path / "first.log").read_text()
    launch(cli_args(cache, out, tmp_path / "then.log", epochs=2), then)
    log_text = (tmp_path / "then.log").read_text()
    assert f"{then} rank(s)" in log_text and "resumed from" in log_text and "after epoch 1/2" in log_text
    if then == 2:
        assert "weights agree across 2 ranks" in log_text  # checked on every rank; a mismatch fails the run
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and np.isfinite(history["loss"]).all()
    assert (out / "encoder.safetensors").exists() and not (out / "checkpoint.pt").exists()


def test_pretrain_figures(cache: dict[str, Path], cli_run: Path, tmp_path: Path) -> None:
    from cxrmim.analysis.pretrain_figures import make_pretrain_figures

    plots = {"dpi": 40, "style": "whitegrid", "n_examples": 2}
    outputs = make_pretrain_figures(
        cache["prepared"], cache["split"], cache["validity"], [cli_run], 0.75, tmp_path / "figures", plots
    )
    assert [p.name for p in outputs] == ["masking_illustration.png", "reconstructions.png", "pretrain_loss.png"]
    assert all(p.stat().st_size > 1000 for p in outputs)


@pytest.mark.parametrize("method", ["rgmim", "rgmim-lung", "mae"])
def test_no_host_reads_inside_training_steps(
    cache: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    reads = {"n": 0}
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _original: object = original, **kwargs: object) -> object:
            # AdamW reads its step counter, a CPU tensor on every device (no device sync): not counted.
            if "torch/optim" not in sys._getframe(1).f_code.co_filename:
                reads["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def reads_for(batch_size: int) -> int:
        reads["n"] = 0
        settings = tiny_settings(epochs=1, batch_size=batch_size, effective_batch_size=batch_size)
        run(cache, tmp_path / f"{method}_b{batch_size}", method=method, settings=settings)
        return reads["n"]

    # 8 steps or 2 steps per epoch: the same number of host reads, so none happens per step.
    assert reads_for(4) == reads_for(16)

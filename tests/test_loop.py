"""The shared pretraining loop with a toy method: the plug-in contract, ragged batches, statistics, exact resume."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

from cxrmim.device import DeviceSetup, select_device
from cxrmim.optim import seed_everything, weight_decay_groups
from cxrmim.train.distributed import Distributed, distributed_session
from cxrmim.train.epoch import EpochRandom
from cxrmim.train.loop import (
    LoopSettings,
    NonFiniteLoss,
    Schedule,
    run_signature,
    run_training,
    split_batch,
)

N_IMAGES, DIM = 30, 6


class NoisyRegression(nn.Module):
    """Forward returns (loss, stats) as the loop requires; the stats count images and positive targets."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean squared error plus per-batch sums."""
        pred = self.linear(x + self.cls_token[0]).squeeze(1)
        return ((pred - y) ** 2).mean(), {"seen": torch.tensor(float(len(x))), "positive": (y > 0).sum()}


class ToyMethod:
    """The smallest `TrainingMethod`: fixed data, one noise stream, two statistics, weights written as .pt."""

    stat_names = ("seen", "positive")
    history_columns = ("seen_per_epoch", "positive_fraction")

    def __init__(self) -> None:
        data = torch.Generator().manual_seed(1)
        self.x = torch.randn(N_IMAGES, DIM, generator=data)
        self.y = self.x @ torch.arange(DIM, dtype=torch.float32) + 0.5
        self.model = NoisyRegression()
        self.batch_sizes: list[int] = []
        self.steps: list[int] = []

    def loader_tensors(self) -> dict[str, torch.Tensor]:
        return {"x": self.x, "y": self.y}

    def make_batch(self, batch: dict[str, torch.Tensor], rng: EpochRandom) -> dict[str, Any]:
        self.batch_sizes.append(len(batch["x"]))
        noise = torch.randn(batch["x"].shape, generator=rng.stream(0))
        return {"x": batch["x"] + 0.1 * noise, "y": batch["y"]}

    def epoch_columns(self, sums: dict[str, float], n_images: int) -> dict[str, float]:
        return {"seen_per_epoch": sums["seen"], "positive_fraction": sums["positive"] / n_images}

    def signature(self) -> dict[str, Any]:
        return {"toy": DIM}

    def describe(self) -> list[str]:
        return ["toy regression"]

    def write_outputs(self, out_dir: Path) -> None:
        torch.save(self.model.state_dict(), out_dir / "weights.pt")

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        self.steps.append(step)


SETTINGS = {"epochs": 3, "batch_size": 4, "effective_batch_size": 8, "base_lr": 0.1, "warmup_epochs": 1, "seed": 3}


def train_toy(out: Path, stop_after_epochs: int | None = None) -> tuple[ToyMethod, Any]:
    """Seed, build the method, run the loop on CPU."""
    seed_everything(3)
    method = ToyMethod()
    result = run_training(
        method, LoopSettings.from_settings(SETTINGS), select_device("cpu"), Distributed(), out, stop_after_epochs
    )
    return method, result


def test_loop_drops_the_ragged_batch_and_sums_statistics(tmp_path: Path) -> None:
    method, result = train_toy(tmp_path)
    assert result.finished and result.epochs_run == 3
    assert set(method.batch_sizes) == {4}  # 30 images: 7 full batches, the ragged 2 are dropped (as MAE)
    assert len(method.batch_sizes) == 3 * 7
    # 7 micro-batches with 2 per optimizer step: 4 steps per epoch (the last group has one micro-batch).
    assert method.steps == list(range(1, 13))
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.columns) == [
        "epoch",
        "loss",
        "lr",
        "images_per_s",
        "seen_per_epoch",
        "positive_fraction",
        "seconds",
    ]
    assert history["seen_per_epoch"].tolist() == [28.0] * 3
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert history["positive_fraction"].between(0, 1).all()
    assert (tmp_path / "weights.pt").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_loop_resume_is_exact(tmp_path: Path) -> None:
    _, straight = train_toy(tmp_path / "straight")
    _, stopped = train_toy(tmp_path / "resumed", stop_after_epochs=2)
    assert not stopped.finished and (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed" / "weights.pt").exists()
    resumed_method, resumed = train_toy(tmp_path / "resumed")
    assert resumed.epochs_run == 1 and resumed_method.steps == [9, 10, 11, 12]
    expected = torch.load(tmp_path / "straight" / "weights.pt", weights_only=True)
    actual = torch.load(tmp_path / "resumed" / "weights.pt", weights_only=True)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in resumed.history]


def test_schedule_keeps_the_effective_batch_across_world_sizes() -> None:
    settings = LoopSettings.from_settings(SETTINGS | {"effective_batch_size": 16})
    single, double = Schedule.build(settings, 8, 1), Schedule.build(settings, 4, 2)
    assert (single.accum, double.accum) == (4, 2)
    assert single.peak_lr == double.peak_lr == pytest.approx(0.1 * 16 / 256)
    assert single.total_steps == double.total_steps == 6


@pytest.mark.parametrize(("batch", "effective", "world", "split"), [
    (256, 256, 1, (256, 1)), (256, 256, 2, (128, 1)), (256, 256, 8, (32, 1)),  # the paper's batch on 1, 2, 8 GPUs
    (64, 256, 2, (64, 2)), (32, 48, 1, (24, 2)), (32, 16, 1, (16, 1)),
])  # fmt: skip
def test_the_configured_effective_batch_is_what_trains(batch: int, effective: int, world: int, split: tuple) -> None:
    """More GPUs shrink the per-GPU share; they never multiply the effective batch (and with it the peak lr)."""
    settings = LoopSettings.from_settings(SETTINGS | {"batch_size": batch, "effective_batch_size": effective})
    assert split_batch(settings, world) == split
    schedule = Schedule.build(settings, 10, world)
    assert schedule.micro_batch * schedule.accum * world == schedule.effective_batch == effective
    assert schedule.peak_lr == pytest.approx(0.1 * effective / 256)


def test_an_effective_batch_that_does_not_split_is_refused() -> None:
    settings = LoopSettings.from_settings(SETTINGS | {"batch_size": 256, "effective_batch_size": 256})
    with pytest.raises(ValueError, match=r"effective_batch_size 256 does not split over 3 processes.*255 or 258"):
        split_batch(settings, 3)
    odd = LoopSettings.from_settings(SETTINGS | {"batch_size": 32, "effective_batch_size": 33})
    with pytest.raises(ValueError, match=r"33 images each.*multiple of 2 \(e.g. 32 or 34\)"):
        split_batch(odd, 1)


def test_signature_records_the_realised_effective_batch() -> None:
    settings = LoopSettings.from_settings(SETTINGS)
    method = ToyMethod()
    schedule = Schedule.build(settings, 7, 1)
    signed = json.loads(run_signature(method, settings, method.model, schedule))["loop"]
    assert signed["realised_effective_batch"] == 8 and "batch_norm_batch" not in signed
    bn = json.loads(run_signature(method, settings, method.model, schedule, batch_norm_batch=4))["loop"]
    assert bn["batch_norm_batch"] == 4


def test_fp16_loss_scaling_path_trains(tmp_path: Path) -> None:
    """The GradScaler branch of a pre-Ampere GPU, run on the CPU (fp16 autocast, scaled backward and step)."""
    seed_everything(3)
    fp16 = DeviceSetup(torch.device("cpu"), torch.float16, False)
    result = run_training(ToyMethod(), LoopSettings.from_settings(SETTINGS), fp16, Distributed(), tmp_path)
    losses = [row["loss"] for row in result.history]
    assert result.finished and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def ddp_worker(rank: int, port: int, out: str, settings: dict[str, Any]) -> None:
    """One of two torchrun-like gloo ranks training the toy method."""
    os.environ.update(
        WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    with distributed_session("cpu") as ddp:
        seed_everything(3)
        method = ToyMethod()
        run_training(method, LoopSettings.from_settings(settings), select_device("cpu"), ddp, Path(out))
        Path(out, f"batches{rank}.json").write_text(json.dumps(method.batch_sizes))


@pytest.mark.slow
def test_two_process_gloo_ddp_keeps_the_effective_batch(tmp_path: Path) -> None:
    """World size 2 with batch_size = effective batch: each rank runs half, the lr is the single process's."""
    settings = SETTINGS | {"batch_size": 8, "effective_batch_size": 8}
    seed_everything(3)
    single = run_training(
        ToyMethod(), LoopSettings.from_settings(settings), select_device("cpu"), Distributed(), tmp_path / "single"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # fork: the ranks start without re-importing torch (the session runs torch single-threaded, so forking is safe)
    torch.multiprocessing.start_processes(
        ddp_worker, args=(port, str(tmp_path / "ddp"), settings), nprocs=2, start_method="fork"
    )
    history = pd.read_csv(tmp_path / "ddp" / "history.csv")
    for rank in (0, 1):  # 15 images per rank: 3 micro-batches of 4, one optimiser step each (4 x 2 ranks = 8)
        assert json.loads((tmp_path / "ddp" / f"batches{rank}.json").read_text()) == [4] * 9
    assert history["lr"].tolist() == [row["lr"] for row in single.history]  # not twice the peak lr
    assert history["seen_per_epoch"].tolist() == [24.0] * 3  # both ranks' images, summed over ranks


def test_weight_decay_groups_skip_norms_biases_and_tokens() -> None:
    model = NoisyRegression()
    groups = {group["weight_decay"]: group["params"] for group in weight_decay_groups(model, 0.05)}
    assert sorted(groups) == [0.0, 0.05]
    assert [id(p) for p in groups[0.05]] == [id(model.linear.weight)]
    assert {id(p) for p in groups[0.0]} == {id(model.linear.bias), id(model.cls_token)}


def test_epoch_random_streams_are_reproducible_and_distinct() -> None:
    cpu = torch.device("cpu")
    first, again = EpochRandom(0, 2, 1, cpu), EpochRandom(0, 2, 1, cpu)
    assert torch.equal(torch.rand(4, generator=first.stream(0)), torch.rand(4, generator=again.stream(0)))
    other_rank = EpochRandom(0, 2, 0, cpu)
    assert not torch.equal(torch.rand(4, generator=first.stream(1)), torch.rand(4, generator=other_rank.stream(1)))


class LossOnly(nn.Module):
    """A model whose forward returns the bare loss (no statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = NoisyRegression()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The regression loss only."""
        return self.inner(x, y)[0]


class LossOnlyMethod(ToyMethod):
    """The toy method without statistics or own history columns."""

    stat_names = ()
    history_columns = ()

    def __init__(self) -> None:
        super().__init__()
        self.model = LossOnly()

    def epoch_columns(self, sums: dict[str, float], n_images: int) -> dict[str, float]:
        return {}


def test_a_model_may_return_the_bare_loss(tmp_path: Path) -> None:
    seed_everything(3)
    result = run_training(
        LossOnlyMethod(), LoopSettings.from_settings(SETTINGS), select_device("cpu"), Distributed(), tmp_path
    )
    assert result.finished
    assert list(pd.read_csv(tmp_path / "history.csv").columns) == ["epoch", "loss", "lr", "images_per_s", "seconds"]


class DivergingMethod(ToyMethod):
    """The toy method whose targets turn NaN from the second epoch on."""

    def make_batch(self, batch: dict[str, torch.Tensor], rng: EpochRandom) -> dict[str, Any]:
        inputs = super().make_batch(batch, rng)
        return inputs | ({"y": inputs["y"] * float("nan")} if rng.epoch >= 1 else {})


def test_a_non_finite_loss_stops_the_run_before_any_weights_are_written(tmp_path: Path) -> None:
    seed_everything(3)
    with pytest.raises(NonFiniteLoss, match=r"epoch 2/3: the loss is nan .* no weights were written"):
        run_training(DivergingMethod(), LoopSettings.from_settings(SETTINGS), select_device("cpu"), Distributed(),
                     tmp_path)  # fmt: skip
    assert not (tmp_path / "weights.pt").exists() and not (tmp_path / "history.csv").exists()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1  # the last finite epoch

"""Epoch checkpoints for exact resumption: model, optimizer, step counter, history and every RNG state.

A checkpoint carries a signature of everything that changes the trained weights; one written by another
configuration is ignored (with a warning) instead of being resumed into a silently different run.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrmim.io import atomic_path

log = logging.getLogger("cxrmim.checkpoint")


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save through a temporary file so a kill never leaves a truncated checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Load a training checkpoint safely (tensors and plain containers only), or None if absent."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Capture every RNG the training loop draws from, for exact resumption."""
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(numpy_keys.astype(np.int64)),
        # The key alone is not the state: position and cached gaussian decide the next draws.
        "numpy_extra": torch.tensor(
            [float(numpy_pos), float(numpy_has_gauss), float(numpy_gauss)], dtype=torch.float64
        ),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `rng_state`; CUDA states are restored for the devices both runs have (GPU count may differ)."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss, gauss = state["numpy_extra"].tolist() if "numpy_extra" in state else (624, 0, 0.0)
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Optimizer state in its parameter's memory layout (loading gives contiguous tensors; a channels-last
    parameter needs channels-last moments, as fused kernels walk both in storage order). A no-op when they match."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


class Checkpointer:
    """One run's `checkpoint.pt`: written after every epoch, resumed when its signature matches, removed at the end."""

    def __init__(self, path: Path, signature: str) -> None:
        self.path, self.signature = path, signature

    def resume(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """Load a matching checkpoint into model, optimizer (and fp16 loss scaler) -> (epochs done, their history)."""
        checkpoint = load_checkpoint(self.path)
        if checkpoint is None:
            return 0, []
        if checkpoint.get("signature") != self.signature:
            log.warning("%s was written with other settings; starting from scratch", self.path)
            return 0, []
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        match_parameter_layout(optimizer)
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        restore_rng(checkpoint["rng"])
        return int(checkpoint["epoch"]), list(checkpoint["history"])

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        step: int,
        history: list[dict[str, Any]],
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """Everything needed to continue after `epoch` completed epochs (call on the main rank only)."""
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,  # for the record; resumption derives the schedule position from the epoch
            "rng": rng_state(),
            "history": history,
            "signature": self.signature,
            "scaler": scaler.state_dict() if scaler is not None else {},  # empty unless fp16 loss scaling is on
        }
        atomic_save(state, self.path)

    def remove(self) -> None:
        """A finished run drops its checkpoint: a rerun (new inputs, new code) trains afresh, never replays it."""
        self.path.unlink(missing_ok=True)

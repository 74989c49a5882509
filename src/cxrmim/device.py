"""Accelerator selection and the per-device training settings that go with it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger("cxrmim.device")

REQUIRE_GPU_ENV = "CXRMIM_REQUIRE_GPU"  # set to 1 by a site whose scheduler is not SLURM
# What SLURM sets in a job that was allocated GPUs (--gpus, --gres=gpu:N, --gpus-per-node, ...): lists of GPU
# ids ("0", "0,1": "0" is GPU number 0) and counts ("2", "a100:2": "0" is none).
SLURM_GPU_IDS = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
SLURM_GPU_COUNTS = ("SLURM_GPUS_ON_NODE", "SLURM_GPUS", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK")
NO_GPU_IDS = ("", "-1", "NoDevFiles", "none", "(null)")
BF16_MIN_CAPABILITY = 8  # Ampere and later run bf16 natively; older cards emulate it slowly: fp16 + GradScaler


@dataclass(frozen=True)
class DeviceSetup:
    """The chosen device plus the settings that follow from it."""

    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 (or fp16 before compute capability 8) on accelerators, None on CPU
    pin_memory: bool

    @property
    def non_blocking(self) -> bool:
        """Asynchronous host-to-device copies are only meaningful from pinned memory."""
        return self.pin_memory

    @property
    def grad_scaling(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
        return self.autocast_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op on CPU)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is active only under fp16 (disabled it passes losses and steps through unchanged)."""
        return torch.amp.GradScaler(self.device.type if self.grad_scaling else "cpu", enabled=self.grad_scaling)


def cuda_usable() -> bool:
    """True when CUDA is present and a device can really be used.

    SLURM may set CUDA_VISIBLE_DEVICES for a GRES backed by no real GPU; that is not a usable GPU.
    """
    try:
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except RuntimeError:
        return False


def cuda_unusable_reason() -> str:
    """Why CUDA cannot be used here, in words a user can act on."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) was built without CUDA; install a CUDA build of torch"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        count = torch.cuda.device_count()
    except RuntimeError as err:
        return f"CUDA failed to initialise ({err})"
    if count == 0:
        return f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={visible!r}); the node's driver or GRES is broken"
    return "torch.cuda.is_available() is False (driver too old for this torch's CUDA?)"


def gpu_request(requested: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why this job must run on a GPU, or None when the CPU is an acceptable device.

    A GPU is required when the config says `device: cuda`, or with `device: auto` when the job was launched with
    GPUs: SLURM allocated it some, or the site set CXRMIM_REQUIRE_GPU. A local `device: auto` run on a laptop
    (no scheduler) may use the CPU, so the default workflow keeps working there.
    """
    environ = os.environ if environ is None else environ
    if requested == "cuda":
        return "the config sets device: cuda"
    if requested != "auto":
        return None
    if environ.get(REQUIRE_GPU_ENV, "0") not in ("", "0"):
        return f"{REQUIRE_GPU_ENV}={environ[REQUIRE_GPU_ENV]}"
    if "SLURM_JOB_ID" not in environ:
        return None
    job = environ["SLURM_JOB_ID"]
    for name in SLURM_GPU_IDS:
        if environ.get(name, "") not in NO_GPU_IDS:
            return f"SLURM job {job} was allocated GPUs ({name}={environ[name]})"
    for name in SLURM_GPU_COUNTS:
        if environ.get(name, "0").rsplit(":", 1)[-1] not in ("", "0"):
            return f"SLURM job {job} was allocated GPUs ({name}={environ[name]})"
    if "gpu" in environ.get("SLURM_TRES_PER_TASK", ""):
        return f"SLURM job {job} asked for GPUs (SLURM_TRES_PER_TASK={environ['SLURM_TRES_PER_TASK']})"
    return None


def cuda_autocast_dtype(index: int) -> torch.dtype:
    """bf16 from compute capability 8 (Ampere) on, fp16 (with a GradScaler) before."""
    major, _ = torch.cuda.get_device_capability(index)
    return torch.bfloat16 if major >= BF16_MIN_CAPABILITY else torch.float16


def select_device(
    requested: str = "auto",
    local_rank: int | None = None,
    cpu_fallback: bool = False,
    fallback_key: str = "cpu_fallback",
) -> DeviceSetup:
    """Pick cuda, then mps, then cpu for 'auto'; honour an explicit request when it is available.

    A job that needs a GPU (`gpu_request`) and has none usable fails here with the reason, instead of training for
    hours on the CPU, unless `cpu_fallback` (the config key named by `fallback_key`) allows it.
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    requested = requested.lower()
    if requested not in {"auto", "cpu", "cuda", "mps"}:
        raise ValueError(f"device must be one of auto, cpu, cuda, mps; got {requested!r}")
    if requested in {"auto", "cuda"} and cuda_usable():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return DeviceSetup(torch.device("cuda", index), cuda_autocast_dtype(index), True)
    needs_gpu = gpu_request(requested) if requested in {"auto", "cuda"} else None
    if needs_gpu is not None:
        reason = cuda_unusable_reason()
        if not cpu_fallback:
            raise RuntimeError(
                f"this job needs a GPU ({needs_gpu}) but none is usable: {reason}. Fix the node or its CUDA setup, "
                f"or set {fallback_key}: true to let it train on the CPU (many times slower)"
            )
        log.warning("no usable GPU (%s; %s): %s is true, training on the CPU", needs_gpu, reason, fallback_key)
    mps = getattr(torch.backends, "mps", None)
    if requested in {"auto", "mps"} and mps is not None and mps.is_available():
        return DeviceSetup(torch.device("mps"), torch.bfloat16, False)
    return DeviceSetup(torch.device("cpu"), None, False)


def has_batch_norm(model: nn.Module) -> bool:
    """A network with BatchNorm: a ResNet (or a U-Net on one), or SimSiam/BYOL heads; not a bare ViT."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def tune_for_device(model: nn.Module, setup: DeviceSetup) -> nn.Module:
    """CUDA, networks with BatchNorm (the CNNs): cudnn autotuning (fixed input shapes) and channels-last weights
    (tensor cores); anything else is returned unchanged."""
    if setup.device.type == "cuda" and has_batch_norm(model):
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    return model


def adamw(params: Iterable, setup: DeviceSetup, **kwargs: object) -> torch.optim.AdamW:
    """AdamW, fused into one kernel on CUDA (also what lets a GradScaler step without a host sync); the CPU keeps
    the reference implementation, so CPU results do not change."""
    fused = {"fused": True} if setup.device.type == "cuda" else {}
    return torch.optim.AdamW(params, **kwargs, **fused)

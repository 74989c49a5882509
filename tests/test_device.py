"""Device choice read as a GPU would see it, on a CPU with a mocked CUDA and scheduler environment: fail fast
without a usable GPU, bf16 or fp16 by compute capability, and the CUDA-only tuning of CNNs."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from torch import nn

import cxrmim.device as device_module
from cxrmim.device import (
    DeviceSetup,
    adamw,
    gpu_request,
    select_device,
    tune_for_device,
)
from cxrmim.train.distributed import Distributed, prepare_model

SLURM_GPU_JOB = {"SLURM_JOB_ID": "42", "SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}
FAKE_CUDA = DeviceSetup(torch.device("cuda", 0), torch.bfloat16, True)  # never moved to: only its type is read


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A machine whose CUDA is unusable, with no scheduler variables."""
    for name in (
        "SLURM_JOB_ID",
        device_module.REQUIRE_GPU_ENV,
        *device_module.SLURM_GPU_IDS,
        *device_module.SLURM_GPU_COUNTS,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(device_module, "cuda_usable", lambda: False)
    return monkeypatch


@pytest.mark.parametrize(("requested", "environ", "needs"), [
    ("auto", {}, False),  # a laptop: the default run works on the CPU
    ("auto", {"SLURM_JOB_ID": "7"}, False),  # a CPU job on the cluster
    ("auto", {"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "0", "CUDA_VISIBLE_DEVICES": "NoDevFiles"}, False),
    ("auto", SLURM_GPU_JOB, True),  # "0" is GPU number 0, not none
    ("auto", {"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "2"}, True),
    ("auto", {"SLURM_JOB_ID": "7", "SLURM_GPUS_PER_NODE": "a100:1"}, True),
    ("auto", {"SLURM_JOB_ID": "7", "SLURM_TRES_PER_TASK": "cpu=4,gres/gpu=1"}, True),
    ("auto", {"CXRMIM_REQUIRE_GPU": "1"}, True),  # another scheduler's GPU job
    ("auto", {"CUDA_VISIBLE_DEVICES": "0"}, False),  # set by hand outside a scheduler: not a GPU request
    ("cuda", {}, True),
    ("cpu", SLURM_GPU_JOB, False),  # an explicit CPU run on a GPU node
])  # fmt: skip
def test_gpu_request_is_read_from_the_config_and_the_scheduler(requested: str, environ: dict, needs: bool) -> None:
    assert (gpu_request(requested, environ) is not None) == needs


def test_gpu_job_without_a_usable_gpu_fails_fast_naming_the_reason_and_the_key(no_cuda: pytest.MonkeyPatch) -> None:
    for name, value in SLURM_GPU_JOB.items():
        no_cuda.setenv(name, value)
    with pytest.raises(RuntimeError, match=r"needs a GPU \(SLURM job 42 .*SLURM_JOB_GPUS=0.*pretrain\.cpu_fallback"):
        select_device("auto", fallback_key="pretrain.cpu_fallback")
    with pytest.raises(RuntimeError, match="needs a GPU"):
        select_device("cuda")


def test_cpu_fallback_allows_the_cpu_with_a_warning(no_cuda: pytest.MonkeyPatch, caplog) -> None:
    for name, value in SLURM_GPU_JOB.items():
        no_cuda.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="cxrmim.device"):
        setup = select_device("auto", cpu_fallback=True, fallback_key="finetune.cpu_fallback")
    assert setup.device.type == "cpu" and setup.autocast_dtype is None
    assert "finetune.cpu_fallback is true, training on the CPU" in caplog.text


def test_local_auto_run_uses_the_cpu_without_a_gpu(no_cuda: pytest.MonkeyPatch) -> None:
    setup = select_device("auto")
    assert setup.device.type in {"cpu", "mps"}


@pytest.mark.parametrize(("capability", "dtype", "scaling"), [
    ((7, 0), torch.float16, True),  # V100: fp16 with a GradScaler
    ((7, 5), torch.float16, True),  # T4
    ((8, 0), torch.bfloat16, False),  # A100
    ((9, 0), torch.bfloat16, False),  # H100
])  # fmt: skip
def test_autocast_dtype_follows_the_compute_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], dtype: torch.dtype, scaling: bool
) -> None:
    monkeypatch.setattr(device_module, "cuda_usable", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    setup = select_device("auto", local_rank=3)
    assert setup.device == torch.device("cuda", 1) and setup.autocast_dtype == dtype
    assert setup.grad_scaling is scaling and setup.pin_memory


def test_grad_scaler_is_active_only_under_fp16() -> None:
    cpu = select_device("cpu")
    scaler = cpu.grad_scaler()
    loss = torch.tensor(2.0)
    assert not scaler.is_enabled() and scaler.scale(loss) is loss
    fp16 = DeviceSetup(torch.device("cpu"), torch.float16, False)  # CPU stand-in for a pre-Ampere GPU
    assert fp16.grad_scaling and fp16.grad_scaler().is_enabled()


def test_cnns_get_channels_last_sync_batch_norm_and_fused_adamw_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    cpu = select_device("cpu")
    resnet = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    assert tune_for_device(resnet, cpu).conv1[0].weight.is_contiguous() and not torch.backends.cudnn.benchmark
    tuned = tune_for_device(resnet, FAKE_CUDA)
    assert tuned.conv1[0].weight.is_contiguous(memory_format=torch.channels_last) and torch.backends.cudnn.benchmark
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=1, in_chans=3)
    assert tune_for_device(vit, FAKE_CUDA).patch_embed.proj.weight.is_contiguous()  # a ViT is left as it is
    ddp = Distributed(rank=0, world_size=2)
    synced = prepare_model(timm.create_model("resnet10t", num_classes=0), FAKE_CUDA, ddp)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    plain = prepare_model(timm.create_model("resnet10t", num_classes=0), cpu, ddp)  # gloo on CPU: no SyncBN
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in plain.modules())
    params = [nn.Parameter(torch.zeros(2))]
    assert adamw(params, FAKE_CUDA, lr=1e-3).defaults["fused"] is True
    assert not adamw(params, cpu, lr=1e-3).defaults.get("fused")

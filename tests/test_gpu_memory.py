"""Memory at paper scale, checked on CPU: the forced host-data path, memory-mapped inputs, chunked stages,
gradient accumulation, activation checkpointing and the start-up memory estimate."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from test_finetune import PATCH, SETTINGS, TINY_VIT, make_cache
from test_host_sync import host_reads  # noqa: F401 (a fixture)
from test_lung_masks import SMALL
from test_pretrain import TINY_ENCODER, build_tiny_cache, tiny_settings

from cxrmim.data.npz import npz_member
from cxrmim.data.placement import Rows, choose_placement
from cxrmim.data.tensors import BatchLoader
from cxrmim.data.validity import run_patch_validity
from cxrmim.device import select_device
from cxrmim.inits import parse_init
from cxrmim.models.encoders import create_encoder, enable_grad_checkpointing
from cxrmim.models.mae import build_mae
from cxrmim.recipe import FinetuneSettings
from cxrmim.segment.model import SegmenterSpec, build_segmenter, save_segmenter
from cxrmim.segment.predict import run_lung_masks
from cxrmim.train import pretrain_data
from cxrmim.train.finetune import build_model, finetune, train_epoch
from cxrmim.train.finetune_data import load_finetune_data
from cxrmim.train.finetune_optim import Schedule
from cxrmim.train.memory import Probe, estimate_memory, per_sample_activations
from cxrmim.train.pretrain import run_pretraining

CPU = select_device("cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny pretraining cache of test_pretrain."""
    return build_tiny_cache(tmp_path_factory.mktemp("gpumem"))


def test_host_and_device_paths_give_identical_batches(tmp_path: Path) -> None:
    stack = np.random.default_rng(0).integers(0, 255, size=(30, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "stack.npy", stack)
    mapped = np.load(tmp_path / "stack.npy", mmap_mode="r")
    rows = np.array([3, 1, 4, 15, 9, 26, 5, 8, 27, 19, 7, 0, 11, 28], dtype=np.int64)
    tensors = {"images": Rows(mapped, rows), "label": torch.arange(len(rows)) * 10}
    for rank in (0, 1):
        kwargs = {"shuffle": True, "seed": 3, "drop_last": True, "min_batches": 5, "rank": rank, "world_size": 2}
        device = BatchLoader(tensors, 4, CPU, placement="device", **kwargs)
        host = BatchLoader(tensors, 4, CPU, placement="host", **kwargs)
        assert not host.tensors and len(host) == len(device) >= 5
        for epoch in (0, 1):
            pairs = list(zip(device.epoch(epoch), host.epoch(epoch), strict=True))
            assert len(pairs) == len(device)
            for a, b in pairs:
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
                # The rows really are the listed rows of the memory map.
                labels = (a["label"] // 10).numpy()
                assert np.array_equal(a["images"].numpy(), stack[rows[labels]])


def test_placement_follows_the_devices_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = replace(CPU, device=torch.device("cuda", 0), autocast_dtype=torch.bfloat16, pin_memory=True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * 10**9, 80 * 10**9))
    assert choose_placement("auto", cuda, 10 * 10**9, 20 * 10**9) == "device"
    assert choose_placement("auto", cuda, 30 * 10**9, 20 * 10**9) == "host"  # 50 GB > 85% of 40 GB free
    assert choose_placement("device", cuda, 30 * 10**9, 20 * 10**9) == "device"  # forced (and warned)
    assert choose_placement("host", cuda, 1, 1) == "host"
    assert choose_placement("auto", CPU, 10**12, 10**12) == "device"  # host memory either way
    with pytest.raises(ValueError, match="data_placement"):
        choose_placement("gpu", cuda, 1, 1)


def test_forced_host_path_gives_identical_pretraining_and_finetuning(
    cache: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    runs = {}
    for placement in ("auto", "host"):
        settings = tiny_settings(epochs=2, data_placement=placement)
        result = run_pretraining(
            cache["prepared"],
            cache["split"],
            cache["validity"],
            "rgmim",
            0.75,
            TINY_ENCODER,
            settings,
            tmp_path / placement,
        )
        runs[placement] = pd.read_csv(tmp_path / placement / "history.csv").drop(columns=["images_per_s", "seconds"])
        assert result.finished
    pd.testing.assert_frame_equal(runs["auto"], runs["host"], check_exact=True)
    assert "device path (device cpu)" in caplog.text and "host path (device cpu)" in caplog.text
    assert "estimated device memory" in caplog.text and "activations" in caplog.text
    labelled = make_cache(tmp_path / "ft", ["A", "B", "C"], {"train": 12, "val": 6, "test": 6})
    data = load_finetune_data(labelled["prepared"], labelled["split"], labelled["subset"])
    metrics = []
    for placement in ("auto", "host"):
        settings = FinetuneSettings.from_config({**SETTINGS, "epochs": 2, "data_placement": placement})
        result = finetune(data, parse_init("scratch_vit"), TINY_VIT, settings, seed=0, fraction=1.0, patch_size=PATCH)
        metrics.append((result.metrics["val"], result.metrics["test"], result.history.to_dict()))
    assert metrics[0] == metrics[1]


def test_host_path_reads_no_tensor_inside_a_step(tmp_path: Path, host_reads) -> None:  # noqa: F811
    labelled = make_cache(tmp_path, ["A", "B"], {"train": 16, "val": 4, "test": 4})
    data = load_finetune_data(labelled["prepared"], labelled["split"], labelled["subset"])
    settings = FinetuneSettings.from_config(
        {**SETTINGS, "epochs": 2, "batch_size": 4, "min_steps": 24, "data_placement": "host", "effective_batch_size": 8}
    )
    result = finetune(data, parse_init("scratch_vit"), TINY_VIT, settings, seed=0, fraction=1.0, patch_size=PATCH)
    assert result.metrics["steps"] == 24 and result.metrics["effective_batch_size"] == 8 and host_reads
    micro_batches = 2 * result.metrics["steps"]
    assert not {site: n for site, n in host_reads.items() if n >= micro_batches // 2}


def test_validity_is_memory_mapped_and_masks_are_read_only_for_lung_masking(
    cache: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with zipfile.ZipFile(cache["validity"]) as archive:
        assert archive.getinfo("masks.npy").compress_type == zipfile.ZIP_STORED
    masks = npz_member(cache["validity"], "masks")
    with np.load(cache["validity"]) as validity:
        assert isinstance(masks, np.memmap) and np.array_equal(masks, validity["masks"])
    opened: list[str] = []
    monkeypatch.setattr(pretrain_data, "npz_member", lambda path, name: opened.append(name) or npz_member(path, name))
    data = pretrain_data.load_pretrain_data(cache["prepared"], cache["split"], cache["validity"], lung_masks=False)
    assert "masks" not in opened and data.masks is None
    assert isinstance(data.images.base, np.memmap)  # rows of the cache, not a copy
    augment = {"crop_scale": [0.5, 1.0], "hflip": True}
    assert set(data.loader_tensors(augment, lung=False)) == {"images"}
    full = pretrain_data.load_pretrain_data(cache["prepared"], cache["split"], cache["validity"])
    batch = {
        k: v.gather(np.arange(6)) if isinstance(v, Rows) else v[:6] for k, v in full.loader_tensors(augment).items()
    }
    with_masks, valid = pretrain_data.batch_inputs(batch, full, augment, torch.Generator().manual_seed(1))
    alone, none = pretrain_data.batch_inputs(
        {"images": batch["images"]}, data, augment, torch.Generator().manual_seed(1)
    )
    assert torch.equal(with_masks, alone) and none is None and valid.shape == (6, full.valid.shape[1])


def test_chunked_lung_masks_and_patch_validity_match_whole(cache: dict[str, Path], tmp_path: Path) -> None:
    spec = SegmenterSpec.from_settings(SMALL)
    torch.manual_seed(0)
    save_segmenter(build_segmenter(spec).eval(), spec, tmp_path / "seg.safetensors")
    settings = {**SMALL, "batch_size": 4, "prefer_provided": False, "qc": {"n_figure_images": 2}}
    outputs = {}
    for chunk in (8, 4096):  # 40 images: five chunks, or one
        out = tmp_path / f"chunk{chunk}"
        table = run_lung_masks(cache["prepared"], tmp_path / "seg.safetensors", settings, out, out / "qc.png", chunk)
        table[["index", "id", "decision"]].to_csv(out / "status.csv", index=False)
        validity = out / "validity.npz"
        run_patch_validity(
            cache["prepared"],
            {"patch_size": 8, "no_mask_policy": "all_valid", "n_figure_images": 1},
            validity,
            out / "v.csv",
            out / "v.png",
            out / "masks.npy",
            out / "status.csv",
        )
        with np.load(validity) as v:
            outputs[chunk] = (np.load(out / "masks.npy"), (out / "qc.csv").read_text(), {k: v[k] for k in v.files})
    (masks_a, qc_a, npz_a), (masks_b, qc_b, npz_b) = outputs.values()
    assert np.array_equal(masks_a, masks_b) and qc_a == qc_b
    assert npz_a.keys() == npz_b.keys() and all(np.array_equal(npz_a[k], npz_b[k]) for k in npz_a)


def test_accumulating_two_micro_batches_equals_one_double_batch(tmp_path: Path) -> None:
    labelled = make_cache(tmp_path, ["A", "B"], {"train": 16, "val": 2, "test": 2})
    data = load_finetune_data(labelled["prepared"], labelled["split"], labelled["subset"])
    weights = []
    for batch, accumulation in ((16, 1), (8, 2)):
        settings = FinetuneSettings.from_config({**SETTINGS, "batch_size": batch, "augment_preset": "none"})
        torch.manual_seed(0)  # a ViT has no BatchNorm: the mean loss over 16 images is the same either way
        model, norm = build_model(parse_init("scratch_vit"), TINY_VIT, None, 32, PATCH, 2, 0.0)
        initial = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loader = BatchLoader({"image": data.train.images, "label": data.train.labels}, batch, CPU, True, 0, True)
        loss, _ = train_epoch(
            model,
            loader,
            optimizer,
            Schedule(1, 0, 0.5),
            settings,
            norm,
            CPU,
            torch.Generator().manual_seed(0),
            0,
            False,
            accumulation=accumulation,
        )
        weights.append((loss, [p.detach().clone() for p in model.parameters()]))
    (loss_a, one), (loss_b, two) = weights
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(one, two, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(one, initial, strict=True))  # one step was taken
    with pytest.raises(ValueError, match="multiple"):
        _ = FinetuneSettings.from_config({**SETTINGS, "effective_batch_size": 12}).accumulation


def test_activation_checkpointing_keeps_the_gradients() -> None:
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        mae = build_mae(TINY_ENCODER, 32, 8, "random", 0.75, tiny_settings())
        if checkpointing:
            assert enable_grad_checkpointing(mae) >= 1 and mae.grad_checkpointing
        torch.manual_seed(1)
        images = torch.randn(4, 1, 32, 32)
        loss, _, _ = mae(images, generator=torch.Generator().manual_seed(2))
        loss.backward()
        grads.append([p.grad.clone() for p in mae.parameters() if p.grad is not None])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))
    resnet = create_encoder({"timm_name": "resnet10t", "kwargs": {}}, 32, 8)
    assert enable_grad_checkpointing(resnet) == 1 and resnet.grad_checkpointing


MEASURE = """
import json, os, resource, sys, torch
from cxrmim.models.encoders import create_encoder
torch.set_num_threads(1)
model = create_encoder({"timm_name": "vit_tiny_patch16_224", "kwargs": {"embed_dim": 192, "depth": 4,
                        "num_heads": 3}}, 64, 8, num_classes=3)
optimizer = torch.optim.AdamW(model.parameters())
images, labels = torch.randn(48, 1, 64, 64), torch.randint(0, 3, (48,))
def rss_kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
# Resident now, in KiB. The high-water mark is reset here (Linux: clear_refs 5), so the peak the imports reached
# (which varies with what else the machine runs) does not count; without the reset, ru_maxrss is an upper bound.
before = rss_kib("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    peak = lambda: rss_kib("VmHWM")
except OSError:
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(2):
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
after = peak()
print(json.dumps({"peak_mb": (after - before) / 1024, "weights_mb": 4 * sum(p.numel() for p in model.parameters()) / 1e6}))
"""


def test_memory_estimate_is_within_a_factor_of_two_of_the_measured_cpu_peak() -> None:
    measured = json.loads(
        subprocess.run(
            [sys.executable, "-c", MEASURE],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
        ).stdout
    )
    model = create_encoder(
        {"timm_name": "vit_tiny_patch16_224", "kwargs": {"embed_dim": 192, "depth": 4, "num_heads": 3}},
        64,
        8,
        num_classes=3,
    )
    estimate = estimate_memory(model, [Probe(model, (1, 64, 64))], 48, CPU, checkpointing=False)
    # The peak holds the activations, gradients and AdamW state beside the weights created before `before`.
    peak = measured["peak_mb"] * 1e6 + estimate.weights
    assert estimate.activations > 5 * estimate.weights  # activations dominate, as at paper scale
    assert 0.5 < estimate.total / peak < 2.0, (estimate, measured)
    # bf16 autocast halves the activations; checkpointing keeps a fraction of them.
    bf16 = replace(CPU, autocast_dtype=torch.bfloat16)
    assert estimate_memory(model, [Probe(model, (1, 64, 64))], 48, bf16, False).activations == pytest.approx(
        estimate.activations / 2, rel=1e-3
    )
    assert estimate_memory(model, [Probe(model, (1, 64, 64))], 48, CPU, True).activations < estimate.activations / 3
    assert per_sample_activations(Probe(model, (1, 64, 64), times=2.0)) == 2 * per_sample_activations(
        Probe(model, (1, 64, 64))
    )


def test_mem_mb_follows_the_cache_size_and_keeps_the_configured_floor(tmp_path: Path) -> None:
    from cxrmim.resources import job_mem_mb

    config = {
        "dataset": {"kind": "mimic_cxr_jpg"}, "prepare": {"image_size": 224}, "patch_validity": {"patch_size": 16},
        "lung_masks": {"image_size": 256},
        "pretrain": {"augment": {"crop_scale": [0.8, 1.0]}, "device": "auto", "resources": {"gpu": 1}},
        "finetune": {"device": "auto", "resources": {"gpu": 0}},
    }  # fmt: skip
    images = tmp_path / "images.npy"
    with pytest.raises(FileNotFoundError):  # Snakemake asks again once prepare has written the cache
        job_mem_mb("pretrain", str(images), 32000, config, "rgmim")
    with open(images, "wb") as handle:  # MIMIC-CXR at 224 px: 377k images, 18.9 GB (sparse file)
        handle.truncate(377_000 * 224 * 224)
    assert job_mem_mb("pretrain", str(images), 32000, config, "rgmim") == 32000  # on a GPU: the floor
    config["pretrain"]["device"] = "cpu"
    assert job_mem_mb("pretrain", str(images), 32000, config, "rgmim") > 2 * 18_900 * 1.25  # images and masks
    assert 18_900 * 1.25 < job_mem_mb("pretrain", str(images), 32000, config, "mae") < 2 * 18_900  # no masks
    assert job_mem_mb("finetune", str(images), 16000, config) > 18_900 * 1.25  # a CPU job holds its parts
    assert 4000 <= job_mem_mb("lung_masks", str(images), 4000, config) < 6000  # one chunk, not 76 GB
    assert 2000 <= job_mem_mb("patch_validity", str(images), 2000, config) < 4000
    assert job_mem_mb("patch_validity", str(images), 90000, config) == 90000  # a larger configured value stays
    synthetic = config | {"dataset": {"kind": "synthetic", "synthetic": {"n_images": 100}}}
    assert job_mem_mb("finetune", str(tmp_path / "none.npy"), 6000, synthetic) == 6000  # from the config


def test_a_job_that_will_not_fit_says_what_to_change(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cxrmim.train.memory import MemoryEstimate, log_estimate

    cuda = replace(CPU, device=torch.device("cuda", 0), autocast_dtype=torch.bfloat16, pin_memory=True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (24 * 10**9, 24 * 10**9))
    caplog.set_level("INFO")
    fits = MemoryEstimate(10**9, 10**9, 2 * 10**9, 10 * 10**9)
    log_estimate(fits, cuda, 256, False, "pretrain")
    assert "estimated device memory 14.00 GB" in caplog.text and "will not fit" not in caplog.text
    log_estimate(replace(fits, activations=28 * 10**9, data=3 * 10**9), cuda, 256, False, "finetune")
    assert "will not fit in 24.0 GB" in caplog.text
    for advice in ("finetune.data_placement: host", "finetune.grad_checkpointing: true", "halve finetune.batch_size"):
        assert advice in caplog.text

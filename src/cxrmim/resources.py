"""Host memory (mem_mb) a job needs for the prepared cache it reads; torch-free, the Snakefile calls it.

The cache's size is known once prepare has written images.npy: Snakemake evaluates a resource that reads a
missing input later, when the job is ready to run. The configured mem_mb stays a floor; a job whose data
needs more asks for more. What a job holds in host memory, beside a torch process (`BASE_MB`, or the
configured value when that is smaller):
- pretrain, contrastive_pretrain, finetune on the CPU: the images they use (and pretraining's lung masks for
  augmented RGMIM / RGMIM-lung); on a GPU the data goes to the device in chunks or streams from the
  memory map (`cxrmim.data.placement`), so only per-image metadata stays (validity, report tensors);
- lung_masks and patch_validity: one chunk of images plus per-image tables (`segment.predict`, `data.validity`).
Memory-mapped pages are page cache, which the kernel reclaims before a cgroup runs out: they are not counted.
"""

from __future__ import annotations

import os
from typing import Any

MB = 1e6
BASE_MB = {"pretrain": 3000, "contrastive_pretrain": 3000, "finetune": 3000, "lung_masks": 3000, "patch_validity": 1000}
SLACK = 1.25  # allocator overhead, temporaries of one step
LUNG_GUIDED = ("rgmim", "rgmim-lung")  # the methods that read lung masks (MAE only for a logged statistic)
PREDICT_CHUNK, VALIDITY_CHUNK = 1024, 2048  # cxrmim.segment.predict.CHUNK, cxrmim.data.validity.CHUNK
REPORT_BYTES = 4096  # per image: its report record plus token tensors (report methods)


def runs_on_gpu(section: dict[str, Any]) -> bool:
    """True when the job asks for a GPU and may use one."""
    return int((section.get("resources") or {}).get("gpu", 0) or 0) > 0 and section.get("device", "auto") != "cpu"


def data_bytes(rule: str, images: int, n: int, size: int, config: dict[str, Any], method: str | None) -> float:
    """Bytes of data the job holds in host memory besides its process (`images` = bytes of images.npy)."""
    if rule == "lung_masks":
        seg = int(config["lung_masks"].get("image_size", size))
        return min(n, PREDICT_CHUNK) * (6 * size * size + 8 * seg * seg) + 300 * n
    patches = (size // int(config["patch_validity"]["patch_size"])) ** 2
    if rule == "patch_validity":
        return n * patches * 6 + min(n, VALIDITY_CHUNK) * size * size * 3 + 300 * n
    section = config["finetune"] if rule == "finetune" else config["pretrain"]
    if rule == "contrastive_pretrain":
        section = (config.get("contrastive") or {}).get(method or "", {}) | {
            "resources": (config.get("contrastive") or {}).get("resources", {})
        }
    held = n * patches * 2 + (n * REPORT_BYTES if method in ("mrm", "mrm-noreport", "mrm-nosr", "medim") else 0)
    if runs_on_gpu(section):
        return held
    masks = rule == "pretrain" and method in LUNG_GUIDED and bool(section.get("augment"))
    return held + images * (2 if masks else 1)


def cache_bytes(images_npy: str, size: int, config: dict[str, Any]) -> int:
    """Bytes of images.npy: the file once prepare wrote it, before that the synthetic count from the config.

    A real dataset's count is unknown until prepare ran: the FileNotFoundError makes Snakemake evaluate the
    resource again when the job is ready to run (shown as <TBD> in a dry run).
    """
    if os.path.exists(images_npy) or config["dataset"].get("kind") != "synthetic":
        return os.path.getsize(images_npy)
    return int(config["dataset"]["synthetic"]["n_images"]) * size * size


def job_mem_mb(rule: str, images_npy: str, configured: int, config: dict[str, Any], method: str | None = None) -> int:
    """mem_mb for one attempt: the configured value, or what the cache's size needs when that is more."""
    size = int(config["prepare"]["image_size"])
    images = cache_bytes(images_npy, size, config)
    n = images // (size * size)
    # A configured value below the usual process size is taken as the process's own need (tiny CPU runs).
    need = min(int(configured), BASE_MB[rule]) + SLACK * data_bytes(rule, images, n, size, config, method) / MB
    return max(int(configured), round(need))

"""Reading source records onto the prepared grid, in worker processes that die with their parent."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrmim.data.progress import Progress
from cxrmim.data.readers import DEFAULT_MAX_PIXELS, set_max_image_pixels

log = logging.getLogger(__name__)

PARENT_POLL_S = 1.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class LoadOptions:
    """How a record becomes a grid image: grid size, minimum source side, contrast, decompression-bomb limit."""

    size: int
    min_side: int = 1
    contrast: str = "none"
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    @classmethod
    def from_config(cls, prepare_cfg: dict[str, Any]) -> LoadOptions:
        """Options from the `prepare` config section (defaults for absent keys)."""
        return cls(
            size=int(prepare_cfg["image_size"]),
            min_side=int(prepare_cfg.get("min_image_side", 1)),
            contrast=str(prepare_cfg.get("contrast", "none")),
            max_pixels=prepare_cfg.get("max_image_pixels", DEFAULT_MAX_PIXELS),
        )


@dataclass
class LoadedImage:
    """One record after reading and resizing, or the reason it could not be read."""

    image: np.ndarray | None
    mask: np.ndarray | None
    error: str | None = None
    mask_problem: str | None = None  # a mask drawn for another image: a dataset error, never skipped quietly
    digest: str | None = None  # SHA-256 of the decoded pixels, for exact-duplicate detection
    lesion: np.ndarray | None = None  # the lesion mask on the grid, for records with one (SourceRecord.lesion_rle)


def pixel_digest(array: np.ndarray) -> str:
    """Hash of decoded pixel values and shape: the same picture under two names or formats hashes equal."""
    array = np.ascontiguousarray(array)
    return hashlib.sha256(str(array.shape).encode() + array.tobytes()).hexdigest()


def load_record(record: Any, options: LoadOptions) -> LoadedImage:
    """Read, check and resize one record's image and mask."""
    from cxrmim.data.contrast import normalise_contrast
    from cxrmim.data.readers import (
        BadImageError,
        check_mask_fits,
        check_min_side,
        check_not_blank,
        read_grey,
        read_mask,
        resize_to_grid,
    )

    try:
        grey = read_grey(record.image)
        check_min_side(record.image, grey.shape, options.min_side)
        check_not_blank(record.image, grey)
        raw_mask = read_mask(record.mask) if record.mask is not None else None
    except BadImageError as err:
        return LoadedImage(None, None, str(err))
    if raw_mask is not None:
        try:
            check_mask_fits(grey.shape, raw_mask.shape, record.image, record.mask)
        except BadImageError as err:
            return LoadedImage(None, None, mask_problem=str(err))
    try:
        raw_lesion = lesion_mask(record, grey.shape)
    except ValueError as err:  # an RLE that does not fit its image: a dataset error, like a mismatched mask
        return LoadedImage(None, None, mask_problem=str(err))
    image = normalise_contrast(resize_to_grid(grey, options.size, is_mask=False), options.contrast)
    mask = resize_to_grid(raw_mask.astype(np.uint8), options.size, is_mask=True) if raw_mask is not None else None
    lesion = resize_to_grid(raw_lesion.astype(np.uint8), options.size, is_mask=True) if raw_lesion is not None else None
    return LoadedImage(image, mask, digest=pixel_digest(np.rint(grey * 255.0).astype(np.uint8)), lesion=lesion)


def lesion_mask(record: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """A record's lesion mask on its image's own grid (bool), or None without a lesion annotation.

    A ValueError names the image when its RLE does not fit that grid (a mask encoded for another image).
    """
    from cxrmim.data.rle import decode_union

    rles = getattr(record, "lesion_rle", None)
    if rles is None:
        return None
    try:
        return decode_union(list(rles), (int(shape[0]), int(shape[1])))
    except ValueError as err:
        raise ValueError(
            f"{record.image}: its lesion mask does not fit the {shape[0]}x{shape[1]} image ({err}); "
            "check that the RLE rows belong to this image"
        ) from None


def _load_job(job: tuple[Any, LoadOptions]) -> LoadedImage:
    """Pool entry point: one (record, options) pair."""
    return load_record(*job)


def _die_with_parent(parent: int, max_pixels: int | None) -> None:
    """Worker initialiser: end this worker when the parent dies, even by SIGKILL, so no orphan holds memory."""
    set_max_image_pixels(max_pixels)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # Elsewhere (and if the parent died before prctl took effect) a watcher thread notices the re-parenting.
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Exit the worker as soon as its parent process is gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def iter_loaded(
    records: list[Any], options: LoadOptions, workers: int = 1, progress: str = "images read"
) -> Iterator[LoadedImage]:
    """Yield each record's LoadedImage in order, reading in `workers` processes, with progress lines."""
    set_max_image_pixels(options.max_pixels)
    meter = Progress(progress, len(records))
    jobs = ((record, options) for record in records)
    if workers > 1:
        with ProcessPoolExecutor(
            max_workers=workers, initializer=_die_with_parent, initargs=(os.getpid(), options.max_pixels)
        ) as pool:
            for item in pool.map(_load_job, jobs, chunksize=16):
                yield item
                meter.step()
    else:
        for job in jobs:
            yield _load_job(job)
            meter.step()


def raise_mask_problems(problems: list[str]) -> None:
    """One error listing every image whose mask does not fit it, with what to do."""
    if not problems:
        return
    raise ValueError(
        f"{len(problems)} mask(s) do not fit their image (a mask drawn for another image?):\n  "
        + "\n  ".join(problems)
        + "\nFix each mask path (manifest `mask` column or masks/ file name) so it names this image's mask, or "
        "empty the mask cell so the image counts as having no mask (see patch_validity.no_mask_policy). "
        "prepare.on_bad_image does not apply: a wrong mask would train the model on the wrong lung."
    )


def load_records(
    records: list[Any], size: int, workers: int = 1, options: LoadOptions | None = None
) -> list[LoadedImage]:
    """Every record read onto a size x size grid (errors kept per record); mismatched masks raise at once."""
    options = options or LoadOptions(size=size)
    loaded = list(iter_loaded(records, options, workers))
    raise_mask_problems([item.mask_problem for item in loaded if item.mask_problem])
    return loaded

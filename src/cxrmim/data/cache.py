"""The prepared cache on disk: images and masks streamed into memory-mapped .npy files, renamed when complete."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from cxrmim.io import atomic_path, write_text_atomic


def cache_bytes(n_rows: int, size: int, lesions: bool = False) -> int:
    """Bytes the images, masks (and lesion_masks) .npy files of a cache take (headers aside)."""
    return (3 if lesions else 2) * n_rows * size * size


def disk_full_message(out_dir: Path, n_rows: int, size: int, lesions: bool = False) -> str:
    """What to say when the cache does not fit: where, how much it needs, how much is free."""
    free = shutil.disk_usage(_existing(out_dir)).free
    return (
        f"{out_dir}: the disk is full: the prepared cache of {n_rows} images at {size} px needs "
        f"{cache_bytes(n_rows, size, lesions) / 1e9:.2f} GB and {free / 1e9:.2f} GB are free there (nothing was left "
        "behind); free space on that filesystem or move results/ to a larger one"
    )


def check_free_space(out_dir: Path, n_rows: int, size: int, lesions: bool = False) -> None:
    """Fail before writing anything when the filesystem of out_dir cannot hold the cache."""
    if shutil.disk_usage(_existing(out_dir)).free < cache_bytes(n_rows, size, lesions):
        raise ValueError(
            disk_full_message(out_dir, n_rows, size, lesions).replace("the disk is full", "not enough disk space")
        )


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing parent folder (where free space is measured)."""
    return next((p for p in [Path(path), *Path(path).absolute().parents] if p.exists()), Path("."))


class CacheWriter:
    """Rows written one at a time into temporary images/masks .npy files; nothing final until commit().

    With `lesions`, a third file `lesion_masks.npy` holds each row's lesion mask (zeros where a row has none), for
    sources that annotate lesions (SIIM-ACR, the phantoms); the lung masks.npy stays what it is for every source.
    Without, commit writes `lesion_masks.npy` as an empty (0,) uint8 array: the prepare rule's outputs are the same
    for every kind, and a reader tells "no lesion masks" from the shape.

    Rows go through ordinary file writes rather than a writable memory map, so the process never holds the
    cache: its peak memory is one row (the page cache the kernel keeps is not the process's and is reclaimable).
    """

    def __init__(self, out_dir: Path, n_rows: int, size: int, lesions: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.n_rows, self.row_bytes = n_rows, size * size
        names = ("images", "masks", "lesion_masks") if lesions else ("images", "masks")
        self.tmp = {name: self.out_dir / f"{name}.tmp.npy" for name in names}
        self.handles: dict[str, BinaryIO] = {}
        try:
            for name, path in self.tmp.items():
                self.handles[name] = _open_npy(path, (n_rows, size, size))
        except BaseException:
            self.discard()  # the first file must not stay behind when the second cannot be made
            raise
        self.offsets = {name: handle.tell() for name, handle in self.handles.items()}

    def write(self, row: int, image: np.ndarray, mask: np.ndarray | None, lesion: np.ndarray | None = None) -> None:
        """Store one row (an absent mask or lesion mask is stored as zeros)."""
        empty = np.zeros(self.row_bytes, np.uint8)
        arrays = {"images": image, "masks": empty if mask is None else mask}
        if "lesion_masks" in self.tmp:
            arrays["lesion_masks"] = empty if lesion is None else lesion
        for name, array in arrays.items():
            handle = self.handles[name]
            handle.seek(self.offsets[name] + row * self.row_bytes)
            handle.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())

    def commit(self, keep: np.ndarray, manifest: pd.DataFrame, summary: dict, labels: np.ndarray | None = None) -> None:
        """Keep the rows marked in `keep` (compacting when some are dropped) and move every file into place.

        `labels` (one row per manifest row) becomes labels.npy, the task's label matrix.
        """
        keep = np.asarray(keep, dtype=bool)
        for name, path in self.tmp.items():
            self.handles.pop(name).close()
            if not keep.all():
                kept = self.out_dir / f"{name}.kept.tmp.npy"
                _compact(path, keep, kept)
                path.unlink()
                path = kept
            path.replace(self.out_dir / f"{name}.npy")
        if "lesion_masks" not in self.tmp:
            with atomic_path(self.out_dir / "lesion_masks.npy") as tmp_lesions:
                np.save(tmp_lesions, np.zeros(0, dtype=np.uint8))
        if labels is not None:
            with atomic_path(self.out_dir / "labels.npy") as tmp_labels:
                np.save(tmp_labels, np.asarray(labels, dtype=np.uint8))
        with atomic_path(self.out_dir / "manifest.csv") as tmp_csv:
            manifest.to_csv(tmp_csv, index=False)
        write_text_atomic(self.out_dir / "summary.json", json.dumps(summary, indent=2))

    def discard(self) -> None:
        """Remove the temporary files (the stage failed); earlier final files stay untouched."""
        for handle in self.handles.values():
            # A full disk can fail the close's flush too; the file is removed next anyway.
            with contextlib.suppress(OSError):
                handle.close()
        self.handles.clear()
        for path in list(self.tmp.values()) + list(self.out_dir.glob("*.kept.tmp.npy")):
            path.unlink(missing_ok=True)


def _open_npy(path: Path, shape: tuple[int, ...]) -> BinaryIO:
    """A new uint8 .npy file of `shape` (zero-filled, sparse) open for writing after its header."""
    handle = path.open("w+b")
    np.lib.format.write_array_header_1_0(handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
    start = handle.tell()
    handle.truncate(start + int(np.prod(shape)))
    return handle


def _compact(source: Path, keep: np.ndarray, target: Path) -> None:
    """Copy the kept rows into a new .npy file, one row at a time."""
    with source.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        shape, _, _ = (
            np.lib.format.read_array_header_1_0(handle)
            if version == (1, 0)
            else (np.lib.format.read_array_header_2_0(handle))
        )
        start, row_bytes = handle.tell(), int(np.prod(shape[1:]))
    with source.open("rb") as handle, _open_npy(target, (int(keep.sum()), *shape[1:])) as out:
        for row in np.flatnonzero(keep):
            handle.seek(start + int(row) * row_bytes)
            out.write(handle.read(row_bytes))

"""The prepared cache on disk: images and masks streamed into memory-mapped .npy files, renamed when complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cxrmim.io import atomic_path, write_text_atomic

COPY_ROWS = 1024


class CacheWriter:
    """Rows written one at a time into temporary memory-mapped images/masks files; nothing final until commit()."""

    def __init__(self, out_dir: Path, n_rows: int, size: int) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shape = (n_rows, size, size)
        self.tmp = {name: self.out_dir / f"{name}.tmp.npy" for name in ("images", "masks")}
        self.arrays = {name: np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=self.shape)
                       for name, path in self.tmp.items()}

    def write(self, row: int, image: np.ndarray, mask: np.ndarray | None) -> None:
        """Store one row (an absent mask is stored as zeros)."""
        self.arrays["images"][row] = image
        self.arrays["masks"][row] = 0 if mask is None else mask

    def commit(self, keep: np.ndarray, manifest: pd.DataFrame, summary: dict) -> None:
        """Keep the rows marked in `keep` (compacting when some are dropped) and move every file into place."""
        keep = np.asarray(keep, dtype=bool)
        for name, path in self.tmp.items():
            array = self.arrays.pop(name)
            if not keep.all():
                path = _compact(array, keep, self.out_dir / f"{name}.kept.tmp.npy")
                self.tmp[name].unlink()
            else:
                array.flush()
            del array
            path.replace(self.out_dir / f"{name}.npy")
        with atomic_path(self.out_dir / "manifest.csv") as tmp_csv:
            manifest.to_csv(tmp_csv, index=False)
        write_text_atomic(self.out_dir / "summary.json", json.dumps(summary, indent=2))

    def discard(self) -> None:
        """Remove the temporary files (the stage failed); earlier final files stay untouched."""
        self.arrays.clear()
        for path in list(self.tmp.values()) + list(self.out_dir.glob("*.kept.tmp.npy")):
            path.unlink(missing_ok=True)


def _compact(array: np.ndarray, keep: np.ndarray, path: Path) -> Path:
    """Copy the kept rows into a new memory-mapped file, a block at a time (peak memory stays one block)."""
    rows = np.flatnonzero(keep)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=(len(rows), *array.shape[1:]))
    for start in range(0, len(rows), COPY_ROWS):
        block = rows[start : start + COPY_ROWS]
        out[start : start + len(block)] = array[block]
    out.flush()
    del out
    return path

"""The run-length encoding of SIIM-ACR's `train-rle.csv` (the Kaggle pneumothorax challenge, stage 1).

It is not Kaggle's usual RLE: pixels are numbered down the columns first (column-major, index = column * height +
row, from 0), and each pair is (gap, length) where the gap counts the background pixels since the END of the
previous run (for the first run: since pixel 0). So `"3 2 1 4"` on a 3-row image marks pixels 3-4 and 6-9, i.e.
column 1 rows 0-1 and then rows 0-2 of column 2 and row 0 of column 3. `-1` means no mask. This is what the
challenge's own `mask_functions.py` wrote (its `rle2mask(...).T` is the image-oriented mask).
"""

from __future__ import annotations

import numpy as np

__all__ = ["NO_MASK", "RleError", "decode", "decode_union", "encode"]

NO_MASK = "-1"


class RleError(ValueError):
    """An EncodedPixels string that is not a SIIM run-length encoding of a mask of the given shape."""


def _pairs(rle: str) -> np.ndarray:
    """The (gap, length) pairs of a string as an (n, 2) int64 array; malformed strings raise RleError."""
    tokens = rle.split()
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        raise RleError(f"{rle[:60]!r}: not space-separated integers") from None
    if len(values) % 2:
        raise RleError(f"{rle[:60]!r}: an odd number of values ({len(values)}); RLE is (start, length) pairs")
    pairs = values.reshape(-1, 2)
    if (pairs < 0).any() or (pairs[:, 1] == 0).any():
        raise RleError(f"{rle[:60]!r}: negative gaps or empty runs; is this the SIIM relative RLE?")
    return pairs


def decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """One EncodedPixels string -> bool (rows, cols) mask; '-1' or '' is the empty mask."""
    rows, cols = shape
    flat = np.zeros(rows * cols, dtype=bool)
    text = rle.strip()
    if text in ("", NO_MASK):
        return flat.reshape(shape)
    pairs = _pairs(text)
    # Absolute start of run k: all gaps up to k plus all lengths before k.
    ends = np.cumsum(pairs[:, 0] + pairs[:, 1])
    starts = ends - pairs[:, 1]
    if ends[-1] > flat.size:
        raise RleError(
            f"{text[:60]!r}: runs reach pixel {int(ends[-1])} of a {rows}x{cols} image ({flat.size} pixels); "
            "the mask was encoded for a larger image (SIIM masks are for the 1024x1024 DICOM)"
        )
    for start, end in zip(starts, ends):
        flat[start:end] = True
    return flat.reshape((cols, rows)).T  # column-major: consecutive pixels run down a column


def decode_union(rles: list[str], shape: tuple[int, int]) -> np.ndarray:
    """Several rows of one image (one per pneumothorax region) -> the union of their masks."""
    mask = np.zeros(shape, dtype=bool)
    for rle in rles:
        mask |= decode(rle, shape)
    return mask


def encode(mask: np.ndarray) -> str:
    """A 2-D mask (nonzero = foreground) -> its SIIM EncodedPixels string ('-1' when empty)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise RleError(f"encode needs a 2-D mask, got shape {mask.shape}")
    flat = np.concatenate([[False], mask.T.reshape(-1) != 0, [False]])  # column-major, padded for the edges
    change = np.flatnonzero(flat[1:] != flat[:-1])
    if not len(change):
        return NO_MASK
    starts, ends = change[0::2], change[1::2]
    gaps = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{g} {n}" for g, n in zip(gaps, ends - starts))

"""Duplicate images at prepare: exact copies by pixel hash, re-encoded or resized copies by perceptual hash."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy.fft import dctn

log = logging.getLogger(__name__)

HASH_GRID = 32
HASH_BITS = 8  # the 8 x 8 lowest DCT frequencies: a 64-bit pHash
BLOCK_ROWS = 2048
# Chest X-rays share their anatomy, so distinct images often have close pHashes (phantoms: 0.3% of pairs within
# 10 bits); a candidate pair is confirmed only when the grid images also agree pixel by pixel. Measured on phantoms:
# distinct pairs differ by >= 10 grey levels on average, a JPEG-re-encoded, resized copy by about 3.
DEFAULTS = {"near_distance": 10, "max_mean_difference": 6.0, "action": "group", "conflicts": "fail"}


def perceptual_hash(image: np.ndarray) -> np.uint64:
    """64-bit pHash of a grid image: signs of its lowest DCT frequencies against their median."""
    small = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize((HASH_GRID, HASH_GRID),
                                                                                Image.Resampling.BOX)
    low = dctn(np.asarray(small, dtype=np.float64), norm="ortho")[:HASH_BITS, :HASH_BITS].ravel()
    bits = low > np.median(low[1:])  # the DC term only says how bright the image is
    return np.packbits(bits).view(">u8")[0].astype(np.uint64)


def near_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair of hashes at most `max_distance` bits apart, i < j (blockwise, exact)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs = []
    for start in range(0, len(hashes), BLOCK_ROWS):
        block = hashes[start : start + BLOCK_ROWS]
        distance = np.bitwise_count(block[:, None] ^ hashes[None, start:])
        rows, cols = np.nonzero(distance <= max_distance)
        for r, c in zip(rows, cols):
            i, j = start + int(r), start + int(c)
            if i < j:
                pairs.append((i, j, int(distance[r, c])))
    return pairs


@dataclass
class DuplicateResult:
    """What duplicate handling decided: rows to keep, split groups after merging, and a report per cluster."""

    keep: np.ndarray
    groups: list[str]
    clusters: list[dict[str, Any]]


def _clusters(n: int, pairs: list[tuple[int, int, str]]) -> list[list[int]]:
    """Connected components (size >= 2) of the duplicate pairs, each sorted, in order of first member."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(j)] = root(i)
    members: dict[int, list[int]] = {}
    for i in sorted({k for pair in pairs for k in pair[:2]}):
        members.setdefault(root(i), []).append(i)
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda m: m[0])


def mean_difference(image_a: np.ndarray, image_b: np.ndarray) -> float:
    """Mean absolute grey-level difference of two grid images."""
    return float(np.abs(np.asarray(image_a, dtype=np.float32) - np.asarray(image_b, dtype=np.float32)).mean())


def find_duplicates(digests: list[str | None], phashes: np.ndarray, near_distance: int,
                    same_picture: Callable[[int, int], bool] | None = None
                    ) -> tuple[list[list[int]], dict[tuple[int, int], str]]:
    """Clusters of duplicate rows, and how each linked pair was found ('exact' or 'near:<bits>').

    Near pairs (pHash within `near_distance` bits; negative turns them off) count only when `same_picture` agrees.
    """
    first: dict[str, int] = {}
    pairs: list[tuple[int, int, str]] = []
    for i, digest in enumerate(digests):
        if digest is None:
            continue
        if digest in first:
            pairs.append((first[digest], i, "exact"))
        else:
            first[digest] = i
    if near_distance >= 0:
        exact = {(i, j) for i, j, _ in pairs}
        pairs += [(i, j, f"near:{d}") for i, j, d in near_pairs(phashes, near_distance)
                  if (i, j) not in exact and (same_picture is None or same_picture(i, j))]
    how = {(i, j): kind for i, j, kind in pairs}
    return _clusters(len(digests), pairs), how


def resolve_duplicates(labels: list[str], groups: list[str], sources: list[str], paths: list[str],
                       digests: list[str | None], phashes: np.ndarray, settings: dict[str, Any],
                       grid: Callable[[int], np.ndarray] | None = None) -> DuplicateResult:
    """Group or drop duplicates by prepare.duplicates; conflicting labels fail unless `conflicts` resolves them.

    `grid(i)` returns row i's prepared image, used to confirm near-duplicate candidates.
    """
    settings = {**DEFAULTS, **(settings or {})}
    limit = float(settings["max_mean_difference"])
    same = None if grid is None else (lambda i, j: mean_difference(grid(i), grid(j)) <= limit)
    clusters, how = find_duplicates(digests, phashes, int(settings["near_distance"]), same)
    keep = np.ones(len(labels), dtype=bool)
    report, conflicts, links = [], [], []
    for members in clusters:
        found = sorted({kind for (i, j), kind in how.items() if i in members and j in members})
        cluster_labels = sorted({labels[i] for i in members})
        entry = {"sources": [sources[i] for i in members], "labels": cluster_labels,
                 "found_by": found}
        if len(cluster_labels) > 1:
            conflicts.append((members, cluster_labels))
            if settings["conflicts"] == "drop":
                keep[members] = False
                entry["resolution"] = "dropped (conflicting labels)"
        if keep[members].any():
            if settings["action"] == "drop":
                keep[members[1:]] = False
                entry["resolution"] = entry.get("resolution", "kept the first, dropped the rest")
            links += [(groups[members[0]], groups[i]) for i in members[1:]]
            entry.setdefault("resolution", "kept in one split group")
        log.warning("duplicates (%s), labels %s, %s:\n  %s", ", ".join(found), cluster_labels, entry["resolution"],
                    "\n  ".join(paths[i] for i in members))
        report.append(entry)
    if conflicts and settings["conflicts"] == "fail":
        lines = [f"labels {lab}: " + ", ".join(paths[i] for i in m) for m, lab in conflicts[:10]]
        raise ValueError(
            f"{len(conflicts)} duplicate image set(s) carry conflicting labels:\n  " + "\n  ".join(lines)
            + "\nFix the labels in the source, remove the copies, or set prepare.duplicates.conflicts: drop "
            "(leave such images out) or keep (keep them, in one split group)"
        )
    return DuplicateResult(keep=keep, groups=merge_groups(groups, links), clusters=report)


def merge_groups(groups: list[str], links: list[tuple[str, str]]) -> list[str]:
    """Split groups after joining linked ones (a patient's other images follow the duplicate into its group)."""
    parent: dict[str, str] = {}

    def root(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(g) for g in groups]

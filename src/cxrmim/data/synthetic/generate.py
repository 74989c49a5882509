"""Rendering of single phantoms and of whole datasets (optionally in a process pool)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from cxrmim.data.synthetic.anatomy import _draw_anatomy
from cxrmim.data.synthetic.lesions import _draw_lesion, _findings_of
from cxrmim.data.synthetic.nuisance import _draw_annotations, _draw_tubes, _expose
from cxrmim.data.synthetic.report import _report
from cxrmim.data.synthetic.settings import (
    _ANATOMY,
    _CLASS,
    _FOLLOW_UP,
    _FOLLOW_UP_RATE,
    _LABEL_NOISE,
    _LESION,
    _NUISANCE,
    _REPORT,
    CLASSES,
    FINDINGS,
    NO_FINDING,
    PhantomSettings,
    _rng,
)


@dataclass
class Phantom:
    """One rendered phantom: image, exact lung mask, labels and a templated report."""

    image: np.ndarray  # uint8 (S, S)
    mask: np.ndarray  # uint8 (S, S), 1 = lung
    label: str  # recorded label (after label noise)
    true_label: str  # class actually drawn
    report: str
    patient_id: str
    lesion: np.ndarray  # uint8 (S, S), 1 where a reported finding lies (all zero for Normal)


def _anchor(settings: PhantomSettings, index: int) -> int:
    """Index of the patient's first image: odd indices are sometimes a follow-up of the previous one."""
    if index % 2 == 1 and _rng(settings, index, _FOLLOW_UP).random() < _FOLLOW_UP_RATE:
        return index - 1
    return index


def class_of(settings: PhantomSettings, index: int) -> str:
    """Class drawn for image `index` (a follow-up shares its patient's class), per class_balance.

    Multi-finding phantoms draw each lesion type with finding_probability instead; the label is the set.
    """
    anchor = _anchor(settings, index)
    if settings.multi_finding:
        present = _rng(settings, anchor, _CLASS).random(len(FINDINGS)) < settings.finding_probability
        return "|".join(name for name, on in zip(FINDINGS, present) if on) or NO_FINDING
    return CLASSES[int(_rng(settings, anchor, _CLASS).choice(len(CLASSES), p=settings.class_probabilities))]


def _recorded_label(settings: PhantomSettings, index: int, true_label: str) -> str:
    """Apply label noise: with probability label_noise, record a uniformly chosen other class.

    Multi-finding labels instead toggle one uniformly chosen finding.
    """
    rng = _rng(settings, index, _LABEL_NOISE)
    flip, shift = rng.random() < settings.label_noise, int(rng.integers(1, len(CLASSES)))
    if not flip:
        return true_label
    if settings.multi_finding:
        toggled = set(_findings_of(true_label)) ^ {FINDINGS[shift - 1]}
        return "|".join(name for name in FINDINGS if name in toggled) or NO_FINDING
    return CLASSES[(CLASSES.index(true_label) + shift) % len(CLASSES)]


def lesion_mask(lesion: np.ndarray, level: float = 0.25) -> np.ndarray:
    """Where the reported finding lies: the lesion map above `level` of its peak -> uint8 (S, S)."""
    peak = float(lesion.max())
    return (lesion > level * peak).astype(np.uint8) if peak > 0 else np.zeros(lesion.shape, dtype=np.uint8)


def render_phantom(settings: PhantomSettings, index: int, label: str | None = None) -> Phantom:
    """Render image `index`; `label` overrides the class while anatomy and nuisance stay identical."""
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    if label is not None and label not in CLASSES and label != NO_FINDING and set(label.split("|")) - set(FINDINGS):
        raise ValueError(
            f"unknown label {label!r}; expected one of {list(CLASSES)} or findings of {list(FINDINGS)} joined by '|'"
        )
    size, strength = settings.image_size, settings.nuisance_strength
    anchor = _anchor(settings, index)
    true_label = label if label is not None else class_of(settings, index)

    anatomy = _draw_anatomy(_rng(settings, anchor, _ANATOMY), size, settings.zoom)
    lesion, findings = _draw_lesion(_rng(settings, index, _LESION), true_label, anatomy, settings)
    # Everything after the lesion is pointwise with class-independent draws, so pixels outside the
    # lungs (where the lesion is exactly 0) are identical for every label.
    nuisance = _rng(settings, index, _NUISANCE)
    tubes, devices = _draw_tubes(nuisance, anatomy, strength)
    film = _expose(nuisance, anatomy.density + lesion + tubes, strength)
    overlay, brightness = _draw_annotations(nuisance, size, strength)
    film = np.where(overlay & ~anatomy.mask, np.float32(brightness), film)
    image = np.round(np.clip(film, 0.0, 1.0) * 255.0).astype(np.uint8)

    report = _report(_rng(settings, index, _REPORT), true_label, findings, devices, anchor != index)
    return Phantom(
        image=image,
        mask=anatomy.mask.astype(np.uint8),
        label=_recorded_label(settings, index, true_label),
        true_label=true_label,
        report=report,
        patient_id=f"P{anchor:06d}",
        lesion=lesion_mask(lesion),
    )


def _render_range(settings: PhantomSettings, start: int, stop: int) -> dict:
    """Render a contiguous block of images into arrays (one unit of work for the process pool)."""
    size, count = settings.image_size, stop - start
    out = {
        "images": np.empty((count, size, size), dtype=np.uint8),
        "masks": np.empty((count, size, size), dtype=np.uint8),
        "lesions": np.empty((count, size, size), dtype=np.uint8),
        "labels": [],
        "true_labels": [],
        "reports": [],
        "patient_ids": [],
    }
    for offset, index in enumerate(range(start, stop)):
        phantom = render_phantom(settings, index)
        out["images"][offset] = phantom.image
        out["masks"][offset] = phantom.mask
        out["lesions"][offset] = phantom.lesion
        out["labels"].append(phantom.label)
        out["true_labels"].append(phantom.true_label)
        out["reports"].append(phantom.report)
        out["patient_ids"].append(phantom.patient_id)
    return out


def generate_dataset(settings: PhantomSettings, workers: int = 1) -> dict:
    """All `n_images` phantoms as arrays and lists; any worker count gives identical results."""
    n = settings.n_images
    workers = max(1, int(workers))
    chunk = max(1, min(256, -(-n // (4 * workers))))
    bounds = [(start, min(n, start + chunk)) for start in range(0, n, chunk)]
    if workers == 1 or len(bounds) == 1:
        parts = [_render_range(settings, start, stop) for start, stop in bounds]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_render_range, settings, start, stop) for start, stop in bounds]
            parts = [future.result() for future in futures]
    merged = {key: np.concatenate([p[key] for p in parts]) for key in ("images", "masks", "lesions")}
    for key in ("labels", "true_labels", "reports", "patient_ids"):
        merged[key] = [item for p in parts for item in p[key]]
    return merged

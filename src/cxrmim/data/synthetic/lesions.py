"""Class evidence: lesion maps of each finding, confined to the lungs."""

from __future__ import annotations

import numpy as np

from cxrmim.data.synthetic.geometry import _Anatomy, _grid, _sigmoid, _smooth_field
from cxrmim.data.synthetic.settings import FINDINGS, PhantomSettings


def _covid_lesion(rng: np.random.Generator, anatomy: _Anatomy, amplitude: float) -> tuple[np.ndarray, dict]:
    """Bilateral, peripheral, lower-zone ground-glass: soft hazy patches along the lateral borders."""
    size = anatomy.mask.shape[0]
    patches = _smooth_field(rng, size, 0.08)
    out = np.zeros_like(anatomy.density)
    weights = rng.uniform(0.5, 1.0, size=2)
    for lung, weight in zip(anatomy.lungs, weights):
        where = _sigmoid((lung.lateral - 0.05) / 0.2) * _sigmoid((lung.height + 0.1) / 0.2)
        patchy = _sigmoid((patches + rng.uniform(0.0, 0.8)) / 0.35)
        out += np.float32(2.0 * amplitude * weight) * where * patchy * lung.mask
    worse = None
    if abs(weights[0] - weights[1]) > 0.25:
        worse = anatomy.lungs[int(np.argmax(weights))].side
    return out, {"worse_side": worse}


def _opacity_lesion(rng: np.random.Generator, anatomy: _Anatomy, amplitude: float) -> tuple[np.ndarray, dict]:
    """Focal unilateral consolidation: one dense, well-defined, slightly irregular blob in one zone."""
    size = anatomy.mask.shape[0]
    lung = anatomy.lungs[int(rng.integers(2))]
    zone = int(rng.integers(3))
    low, high = ((-0.85, -0.3), (-0.3, 0.3), (0.3, 0.85))[zone]
    candidates = lung.mask & (lung.height > low) & (lung.height < high) & (lung.lateral > -0.4)
    if not candidates.any():  # unusual shapes: fall back to anywhere in that lung
        candidates = lung.mask
    centre = int(rng.choice(np.flatnonzero(candidates)))
    u, v = _grid(size)
    cu, cv = u.flat[centre], v.flat[centre]
    radius = anatomy.scale * rng.uniform(0.05, 0.08)
    dist = np.sqrt((u - cu) ** 2 + (v - cv) ** 2) / np.float32(radius)
    dist += 0.25 * _smooth_field(rng, size, 0.05)
    blob = _sigmoid((1.0 - dist) / 0.1)
    zone_name = ("upper", "mid", "lower")[zone]
    return np.float32(1.8 * amplitude) * blob * lung.mask, {"side": lung.side, "zone": zone_name}


def _viral_lesion(rng: np.random.Generator, anatomy: _Anatomy, amplitude: float) -> tuple[np.ndarray, dict]:
    """Diffuse bilateral interstitial pattern: reticular ridges over both lungs, densest perihilar."""
    size = anatomy.mask.shape[0]
    # Two overlaid ridge networks (zero lines of smooth fields) give a dense, fishnet-like texture
    # whose lines stay 2-3 px wide at 64 px.
    reticular = np.maximum(
        np.exp(-((_smooth_field(rng, size, 0.06) / 0.45) ** 2)),
        np.exp(-((_smooth_field(rng, size, 0.06) / 0.45) ** 2)),
    )
    weight = 0.35 + 0.65 * anatomy.hilar
    return np.float32(1.3 * amplitude) * (0.25 + 0.75 * reticular) * weight * anatomy.mask, {}


_LESIONS = {"COVID-19": _covid_lesion, "Lung_Opacity": _opacity_lesion, "Viral_Pneumonia": _viral_lesion}


def _draw_lesion(
    rng: np.random.Generator, label: str, anatomy: _Anatomy, settings: PhantomSettings
) -> tuple[np.ndarray, dict]:
    """Lesion map (zero outside the lungs) and findings for the report; severity varies per image."""
    severity = float(rng.uniform(0.4, 1.0))  # some cases subtle, some obvious
    if label == "Normal":
        return np.zeros_like(anatomy.density), {"severity": severity}
    if label in _LESIONS:
        lesion, findings = _LESIONS[label](rng, anatomy, settings.lesion_contrast * severity)
        return lesion * anatomy.mask, {"severity": severity, **findings}
    # A set of findings: each lesion type drawn in FINDINGS order from the same stream, summed.
    lesion, findings = np.zeros_like(anatomy.density), {"severity": severity}
    for name in _findings_of(label):
        part, details = _LESIONS[name](rng, anatomy, settings.lesion_contrast * severity)
        lesion, findings = lesion + part, {**findings, **details}
    return lesion * anatomy.mask, findings


def _findings_of(label: str) -> list[str]:
    """The lesion types a label names ('COVID-19|Lung_Opacity' -> both; 'Normal' / 'No Finding' -> none)."""
    return [name for name in FINDINGS if name in label.split("|")]

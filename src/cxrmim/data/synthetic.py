"""Synthetic chest-X-ray phantoms with exact lung masks: the embedded default dataset.

Every image is drawn from independent random streams, `np.random.default_rng([seed, index, stream])`,
one per aspect (anatomy, nuisance, lesion, class, label noise, ...). Class evidence is a lesion map
multiplied by the lung mask and every later step is pointwise with class-independent parameters, so
rendering the same index with another label changes pixels only inside the lungs. Geometry is in
normalised coordinates (0..1 across the image) so any `image_size` gives the same picture.
Orientation is the usual PA view: the patient's right lung is on the image's left.

About 7% of images (15% of odd indices) are a follow-up of the previous index: same patient id, class
and anatomy (hence mask), new lesion, exposure and devices. Classes are drawn independently per
patient, so class counts follow `class_balance` only on average.

With `multi_finding`, each lesion type is present independently with `finding_probability` (per patient) and
the label is the set of findings joined by '|' ("No Finding" when none), as in multilabel datasets.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from scipy import ndimage

CLASSES: tuple[str, ...] = ("Normal", "COVID-19", "Lung_Opacity", "Viral_Pneumonia")
FINDINGS: tuple[str, ...] = CLASSES[1:]  # the lesion types, the findings of multi-finding phantoms
NO_FINDING = "No Finding"  # the multi-finding label of an image without lesions (cxrmim.data.tasks.NO_FINDING)

# One stream per aspect, so e.g. changing the class never shifts the anatomy or the nuisance draws.
_ANATOMY, _NUISANCE, _LESION, _CLASS, _LABEL_NOISE, _FOLLOW_UP, _REPORT = range(7)
_FOLLOW_UP_RATE = 0.15  # share of odd indices that are a second image of the previous patient
_MIN_SIZE = 32

# 5x7 glyphs of the lead side markers, drawn in a corner like a technologist's "L"/"R".
_GLYPHS = {
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
}


@dataclass(frozen=True)
class PhantomSettings:
    """Parameters of the phantom generator, as in `dataset.synthetic` of the workflow config."""

    n_images: int = 2400
    image_size: int = 128
    class_balance: tuple[float, ...] = (1, 1, 1, 1)
    lesion_contrast: float = 0.22
    label_noise: float = 0.03
    nuisance_strength: float = 1.0
    zoom: float = 1.35  # thorax magnification: 1.35 fills the frame like real CXRs (lung area about 1/3)
    seed: int = 7
    multi_finding: bool = False  # several findings per image instead of one class
    finding_probability: float = 0.3  # multi_finding: chance of each lesion type, independently

    def __post_init__(self) -> None:
        """Normalise the balance to a float tuple and reject impossible values."""
        balance = self.class_balance
        if isinstance(balance, (list, tuple, np.ndarray)):
            object.__setattr__(self, "class_balance", tuple(balance))
        for name in (f.name for f in fields(self)):
            _check_value(name, getattr(self, name))

    @classmethod
    def from_config(cls, section: dict | None) -> PhantomSettings:
        """Build settings from `config["dataset"]["synthetic"]`; missing keys take the defaults."""
        if section is None:
            return cls()
        if not isinstance(section, Mapping):
            raise ValueError(f"dataset.synthetic must be a mapping, got {type(section).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(key) for key in section if key not in known)
        if unknown:
            raise ValueError(f"dataset.synthetic: unknown key(s) {unknown}; allowed keys are {known}")
        return cls(**dict(section))

    @property
    def class_probabilities(self) -> np.ndarray:
        """Class balance normalised to probabilities, in the order of CLASSES."""
        weights = np.asarray(self.class_balance, dtype=np.float64)
        return weights / weights.sum()


def _is_int(value: object) -> bool:
    """True for integers, but not for booleans (YAML `yes` must not become 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """True for finite real numbers, but not for booleans."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))


def _check_value(name: str, value: object) -> None:
    """Raise a ValueError naming `dataset.synthetic.<name>` when the value is out of range."""
    where = f"dataset.synthetic.{name}"
    if name == "n_images" and not (_is_int(value) and value >= 1):
        raise ValueError(f"{where} must be an integer >= 1, got {value!r}")
    if name == "image_size" and not (_is_int(value) and value >= _MIN_SIZE):
        raise ValueError(f"{where} must be an integer >= {_MIN_SIZE}, got {value!r}")
    if name == "seed" and not (_is_int(value) and value >= 0):
        raise ValueError(f"{where} must be a non-negative integer, got {value!r}")
    if name == "class_balance":
        ok = (
            isinstance(value, tuple)
            and len(value) == len(CLASSES)
            and all(_is_real(w) and w >= 0 for w in value)
            and sum(value) > 0
        )
        if not ok:
            raise ValueError(
                f"{where} must be {len(CLASSES)} non-negative weights (not all zero) for {list(CLASSES)}, "
                f"got {value!r}"
            )
    if name == "multi_finding" and not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}")
    ranges = {
        "finding_probability": (0.0, 1.0), "lesion_contrast": (0.0, 1.0), "label_noise": (0.0, 1.0),
        "nuisance_strength": (0.0, 5.0), "zoom": (0.5, 2.0),
    }
    if name in ranges:
        low, high = ranges[name]
        if not (_is_real(value) and low <= value <= high):
            raise ValueError(f"{where} must be a number in [{low}, {high}], got {value!r}")


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



@dataclass
class _Lung:
    """One lung field: its side, exact mask and local shape coordinates."""

    side: str  # patient side: "right" is on the image's left
    mask: np.ndarray  # bool (S, S)
    lateral: np.ndarray  # local x: about -1 medial .. +1 lateral border at the base
    height: np.ndarray  # local y: -1 apex .. +1 base


@dataclass
class _Frame:
    """Thorax coordinate frame: origin mid-chest, x towards the image's right, y down (normalised units)."""

    x: np.ndarray  # float32 (S, S)
    y: np.ndarray
    origin: tuple[float, float]  # (u, v) of the thorax centre
    angle: float  # rotation of the frame against the image axes, radians

    def window(self, points: list[tuple[float, float]], margin: float) -> tuple[slice, slice]:
        """Pixel rows and columns covering the given frame points plus a margin (normalised units)."""
        size = self.x.shape[0]
        xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        c, s = np.cos(self.angle), np.sin(self.angle)
        us, vs = self.origin[0] + c * xs - s * ys, self.origin[1] + s * xs + c * ys
        lo_u, hi_u = int(np.floor((us.min() - margin) * size)), int(np.ceil((us.max() + margin) * size))
        lo_v, hi_v = int(np.floor((vs.min() - margin) * size)), int(np.ceil((vs.max() + margin) * size))
        return slice(max(0, lo_v), max(0, min(size, hi_v))), slice(max(0, lo_u), max(0, min(size, hi_u)))


@dataclass
class _Anatomy:
    """Class- and nuisance-free rendering of one patient: attenuation map, lungs and thorax frame."""

    density: np.ndarray  # float32 (S, S), higher = brighter on the film
    mask: np.ndarray  # bool (S, S), union of both lungs
    lungs: tuple[_Lung, ...]  # (patient right, patient left)
    hilar: np.ndarray  # float32 (S, S), 1 at the hila falling off outwards
    frame: _Frame
    scale: float


# ----------------------------------------------------------------------------- small helpers


def _rng(settings: PhantomSettings, index: int, stream: int) -> np.random.Generator:
    """Independent generator for one aspect of one image."""
    return np.random.default_rng([settings.seed, int(index), stream])


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (u across, v down), both in 0..1."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    u, v = np.meshgrid(axis, axis)
    u.setflags(write=False)
    v.setflags(write=False)
    return u, v


@lru_cache(maxsize=32)
def _rbf_basis(size: int, n_ctrl: int) -> np.ndarray:
    """Gaussian interpolation matrix (size, n_ctrl + 2) with unit-norm rows, for smooth random fields."""
    spacing = 1.0 / n_ctrl
    centres = np.linspace(-spacing, 1.0 + spacing, n_ctrl + 2)
    x = (np.arange(size) + 0.5) / size
    basis = np.exp(-0.5 * ((x[:, None] - centres[None, :]) / spacing) ** 2)
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)  # unit variance at every pixel
    basis = basis.astype(np.float32)
    basis.setflags(write=False)
    return basis


def _smooth_field(rng: np.random.Generator, size: int, feature: float) -> np.ndarray:
    """Unit-variance smooth Gaussian random field with blobs about `feature` (normalised units) wide."""
    n_ctrl = max(2, int(round(1.0 / feature)))
    basis = _rbf_basis(size, n_ctrl)
    coefficients = rng.standard_normal((n_ctrl + 2, n_ctrl + 2), dtype=np.float32)
    return basis @ coefficients @ basis.T


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function via tanh (no overflow warnings for large |x|)."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _rotate(du: np.ndarray, dv: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of (du, dv) in a frame rotated by `angle` radians."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return c * du + s * dv, -s * du + c * dv


def _add_segment(out: np.ndarray, frame: _Frame, start: tuple, end: tuple, width: float, value: float) -> None:
    """Add a Gaussian band along a straight segment (rounded ends), computed only near the segment."""
    rows, cols = frame.window([start, end], 4 * width)
    x, y = frame.x[rows, cols], frame.y[rows, cols]
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    dist2 = (x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2
    out[rows, cols] += np.float32(value) * np.exp(-dist2 / np.float32(2 * width * width))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 4-connected region: drops one-pixel slivers where a lung tip meets the grid."""
    labelled, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


# ----------------------------------------------------------------------------- anatomy


def _draw_lung(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: str, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Implicit lung shape in thorax coordinates: (f, lateral, height, hilum); f < 1 inside."""
    sign = -1.0 if side == "right" else 1.0  # patient right = image left = negative x
    small = 0.93 if side == "left" else 1.0  # the heart leaves the left lung a little smaller
    cx = sign * scale * rng.uniform(0.18, 0.2)
    cy = scale * rng.uniform(-0.04, 0.01)
    half_width = scale * small * rng.uniform(0.135, 0.16)
    half_height = scale * small * rng.uniform(0.27, 0.31)
    tilt = sign * np.deg2rad(rng.uniform(-2.0, 7.0))  # bases splay outwards
    lx, ly = _rotate(x - np.float32(cx), y - np.float32(cy), tilt)
    lateral = np.float32(sign / half_width) * lx
    height = np.float32(1.0 / half_height) * ly
    # Apex narrow and medial, base broad; the lateral base dips into the costophrenic angle.
    t = np.clip((height + 1.0) * 0.5, 0.0, 1.0)
    apex_width = rng.uniform(0.25, 0.4)
    taper = apex_width + (1.0 - apex_width) * np.sqrt(t)
    apex_shift = -rng.uniform(0.05, 0.25) * (1.0 - t)
    dip = rng.uniform(0.08, 0.2) * lateral
    p, q = rng.uniform(2.0, 2.8), rng.uniform(2.4, 3.6)
    f = np.abs((lateral - apex_shift) / taper) ** p + np.abs(height - dip) ** q
    hilum = (cx - sign * 0.55 * half_width, cy + 0.05 * half_height)
    return f, lateral, height, hilum


def _draw_anatomy(rng: np.random.Generator, size: int, zoom: float) -> _Anatomy:
    """Body, lungs, heart, ribs, spine, clavicles and vessels of one patient (no class, no nuisance)."""
    u, v = _grid(size)
    tu, tv = 0.5 + rng.normal(0, 0.02), 0.5 + rng.normal(0, 0.025)
    scale = float(rng.uniform(0.9, 1.07)) * zoom  # every anatomical length is a multiple of scale
    angle = float(np.deg2rad(rng.normal(0, 2.5)))
    x, y = _rotate(u - np.float32(tu), v - np.float32(tv), angle)
    frame = _Frame(x, y, (tu, tv), angle)
    px = 1.0 / size

    # Soft tissue: a thick ellipse (chest and abdomen) plus the neck; thicker = brighter in the middle.
    body_w, body_h = scale * rng.uniform(0.42, 0.47), scale * rng.uniform(0.55, 0.62)
    body_f = (x / np.float32(body_w)) ** 2 + ((y - np.float32(0.13 * scale)) / np.float32(body_h)) ** 2
    neck = _sigmoid((0.09 * scale - np.abs(x)) / (2 * px)) * _sigmoid((-0.3 * scale - y) / (3 * px))
    body = np.maximum(_sigmoid((1.0 - body_f) / 0.04), neck)
    density = 0.04 + body * (0.3 + 0.16 * np.sqrt(np.clip(1.0 - body_f, 0.0, 1.0)))
    # Mediastinum: the soft-tissue column between the lungs, widest above the heart (aortic knob).
    half = scale * (0.05 + 0.015 * np.exp(-(((y + 0.2 * scale) / (0.05 * scale)) ** 2)))
    density += 0.06 * _sigmoid((half - np.abs(x - 0.01 * scale)) / (2 * px)) * _sigmoid((0.15 * scale - y) / 0.02)

    # Heart: tilted ellipse left of the midline (image right), overlapping the left lung medially.
    hx, hy = scale * rng.uniform(0.07, 0.1), scale * rng.uniform(0.12, 0.16)
    ha, hb = scale * rng.uniform(0.16, 0.19), scale * rng.uniform(0.11, 0.13)
    hxr, hyr = _rotate(x - np.float32(hx), y - np.float32(hy), np.deg2rad(rng.uniform(15, 32)))
    heart_f = (hxr / np.float32(ha)) ** 2 + (hyr / np.float32(hb)) ** 2
    density += 0.06 * _sigmoid((1.0 - heart_f) / 0.06)

    # Lungs: implicit shapes minus heart and mediastinum. The mask thresholds the very same functions
    # that shape the (soft-edged) air, so it is exact up to the one-pixel edge blur.
    gap = 0.045 * scale
    lungs, hila = [], []
    air = np.zeros_like(u)
    outside_heart = _sigmoid((heart_f - 1.0) / 0.06)
    off_midline = _sigmoid((np.abs(x) - gap) / px)
    for side in ("right", "left"):
        f, lateral, height, hilum = _draw_lung(rng, x, y, side, scale)
        mask = _largest_component((f < 1.0) & (heart_f > 1.0) & (np.abs(x) > gap))
        soft = _sigmoid((1.0 - f) / 0.12) * outside_heart * off_midline
        depth = np.sqrt(np.clip(1.0 - f, 0.0, 1.0))  # thicker air column centrally -> darker
        air += soft * (0.27 + 0.07 * depth)
        lungs.append(_Lung(side, mask, lateral, height))
        hila.append(hilum)
    density -= air

    # Spine: vertical bright band with vertebral bodies; clavicles: slanted bands at the apices.
    spine = np.exp(-0.5 * (x / np.float32(0.035 * scale)) ** 2)
    spine *= 0.8 + 0.2 * np.cos(np.float32(2 * np.pi / (0.07 * scale)) * y)
    density += 0.09 * spine * body
    for sign in (-1.0, 1.0):
        start = (sign * scale * 0.04, -scale * rng.uniform(0.27, 0.31))
        end = (sign * scale * rng.uniform(0.26, 0.32), -scale * rng.uniform(0.33, 0.39))
        _add_segment(density, frame, start, end, 0.014 * scale, 0.12)

    # Ribs: posterior arcs (spine outwards and down) and fainter anterior arcs, within the thorax.
    thorax = _sigmoid((1.0 - (x / (0.36 * scale)) ** 2 - ((y + 0.02 * scale) / (0.33 * scale)) ** 2) / 0.08)
    dist = np.abs(x) / np.float32(scale)
    spacing = scale * rng.uniform(0.075, 0.09)
    posterior = (y - scale * (rng.uniform(2.0, 2.8) * dist**2 - 0.12 * dist)) / spacing
    anterior = (y + scale * (rng.uniform(0.8, 1.2) * dist**2 - 0.3 * dist)) / (1.25 * spacing)
    # Raised cosines sharpened by integer powers (written as products: np.power is slow for ints).
    back = 0.5 + 0.5 * np.cos(np.float32(2 * np.pi) * posterior)
    back_cubed = back * back * back
    front = 0.5 + 0.5 * np.cos(np.float32(2 * np.pi) * anterior + np.float32(rng.uniform(0, 2 * np.pi)))
    front *= front
    ribs = 0.06 * back_cubed * back_cubed + 0.03 * front * front
    density += ribs * thorax * (0.3 + 2.3 * air)  # bone edges show best against aerated lung

    # Vessels: faint branching ridges densest at the hila, plus the hilar shadows themselves.
    ridge = np.exp(-((_smooth_field(rng, size, 0.09) / 0.35) ** 2))
    hilar = np.zeros_like(u)
    for hux, huy in hila:
        dist2 = (x - np.float32(hux)) ** 2 + (y - np.float32(huy)) ** 2
        hilar = np.maximum(hilar, np.exp(-dist2 / np.float32(2 * (0.12 * scale) ** 2)))
        density += 0.07 * np.exp(-dist2 / np.float32(2 * (0.03 * scale) ** 2))
    density += air * ridge * (0.03 + 0.1 * hilar)

    union = lungs[0].mask | lungs[1].mask
    return _Anatomy(density.astype(np.float32), union, tuple(lungs), hilar.astype(np.float32), frame, scale)


# ----------------------------------------------------------------------------- class evidence


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


# ----------------------------------------------------------------------------- nuisance


def _draw_tubes(rng: np.random.Generator, anatomy: _Anatomy, strength: float) -> tuple[np.ndarray, list[str]]:
    """Support devices over neck and mediastinum (density, zero over the lungs) and their report lines."""
    frame, s = anatomy.frame, anatomy.scale
    tubes = np.zeros_like(anatomy.density)
    devices = []
    chance = min(1.0, strength)
    draws = rng.random(3)
    jitter = rng.normal(0, 0.01, size=6) * s
    width = 0.006 * s
    if draws[0] < 0.3 * chance:  # endotracheal tube down the trachea, tip above the carina
        _add_segment(tubes, frame, (jitter[0], -0.7), (jitter[1], -0.2 * s + jitter[2]), width, 0.25)
        devices.append("Endotracheal tube in situ.")
    if draws[1] < 0.25 * chance:  # nasogastric tube through the mediastinum into the stomach
        _add_segment(tubes, frame, (jitter[3] - 0.015 * s, -0.7), (-0.01 * s, 0.3 * s), width, 0.2)
        _add_segment(tubes, frame, (-0.01 * s, 0.3 * s), (0.12 * s, 0.38 * s), width, 0.2)
        devices.append("Nasogastric tube passes below the diaphragm.")
    if draws[2] < 0.35 * chance:  # subclavian central line ending in the superior vena cava
        sign = -1.0 if rng.random() < 0.7 else 1.0
        entry = (sign * 0.3 * s, -0.37 * s + jitter[4])
        turn = (sign * 0.05 * s, -0.3 * s + jitter[5])
        tip = (sign * 0.045 * s, -0.12 * s)
        _add_segment(tubes, frame, entry, turn, width, 0.3)
        _add_segment(tubes, frame, turn, tip, width, 0.3)
        devices.append(f"{'Right' if sign < 0 else 'Left'}-sided central line in place.")
    return tubes * ~anatomy.mask, devices


def _expose(rng: np.random.Generator, density: np.ndarray, strength: float) -> np.ndarray:
    """Pointwise film response: gamma, gain, offset, heel gradient, shading and noise, in 0..1."""
    size = density.shape[0]
    u, v = _grid(size)
    gamma = np.exp(rng.normal(0, 0.15 * strength))
    gain = np.exp(rng.normal(0, 0.15 * strength))
    offset = rng.normal(0, 0.06 * strength)
    heel_angle, heel = rng.uniform(0, 2 * np.pi), rng.normal(0, 0.08 * strength)
    shading = np.float32(0.03 * strength) * _smooth_field(rng, size, 0.35)
    sigma = strength * rng.uniform(0.008, 0.03)
    noise = rng.standard_normal(density.shape, dtype=np.float32)
    film = np.clip(density / np.float32(0.85), 0.0, None) ** np.float32(gamma)
    film = offset + gain * film
    film += np.float32(heel * np.cos(heel_angle)) * (u - 0.5) + np.float32(heel * np.sin(heel_angle)) * (v - 0.5)
    return film + shading + np.float32(sigma) * noise


def _glyph(pattern: tuple[str, ...], magnify: int) -> np.ndarray:
    """Bitmap of one glyph, upscaled by an integer factor."""
    bits = np.array([[c == "1" for c in row] for row in pattern], dtype=bool)
    return np.kron(bits, np.ones((magnify, magnify), dtype=bool))


def _stamp(canvas: np.ndarray, stamp: np.ndarray, top: int, left: int) -> None:
    """OR a small bitmap into the canvas at (top, left), clipped to the canvas."""
    skip_rows, skip_cols = max(0, -top), max(0, -left)
    top, left = max(0, top), max(0, left)
    height = min(stamp.shape[0] - skip_rows, canvas.shape[0] - top)
    width = min(stamp.shape[1] - skip_cols, canvas.shape[1] - left)
    if height > 0 and width > 0:
        piece = stamp[skip_rows : skip_rows + height, skip_cols : skip_cols + width]
        canvas[top : top + height, left : left + width] |= piece


def _draw_annotations(rng: np.random.Generator, size: int, strength: float) -> tuple[np.ndarray, float]:
    """Burned-in side marker and text-like blocks in the corners: (bool overlay, brightness)."""
    overlay = np.zeros((size, size), dtype=bool)
    magnify = max(1, round(size / 64))
    margin = int(rng.integers(2, 6)) * magnify
    draws = rng.random(2)
    letter = "L" if rng.random() < 0.6 else "R"
    marker_right = rng.random() < 0.5
    if draws[0] < min(1.0, 0.8 * strength):
        glyph = _glyph(_GLYPHS[letter], magnify)
        left = size - margin - glyph.shape[1] if marker_right else margin
        _stamp(overlay, glyph, margin + int(rng.integers(0, 4)) * magnify, left)
    n_lines = int(rng.integers(1, 4))
    n_chars = rng.integers(3, 9, size=n_lines)
    chars = rng.random((n_lines, 5, 4 * 9)) < 0.55
    text_at_top = rng.random() < 0.5
    if draws[1] < min(1.0, 0.6 * strength):
        for line in range(n_lines):
            bits = chars[line, :, : 4 * n_chars[line]].copy()
            bits[:, 3::4] = False  # gaps between characters
            row = np.kron(bits, np.ones((magnify, magnify), dtype=bool))
            top = margin + line * 7 * magnify if text_at_top else size - margin - (n_lines - line) * 7 * magnify
            left = margin if marker_right else size - margin - row.shape[1]
            _stamp(overlay, row, top, left)
    return overlay, float(rng.uniform(0.85, 1.0))


# ----------------------------------------------------------------------------- report


def _report(rng: np.random.Generator, label: str, findings: dict, devices: list[str], follow_up: bool) -> str:
    """One templated paragraph consistent with the drawn class (or set of findings), naming their location."""
    if label not in CLASSES:  # a multi-finding label: one sentence group per finding, or the normal text
        names = _findings_of(label) or ["Normal"]
        parts = [_report(rng, name, findings, [], False) for name in names]
        sentences = [text for part in parts for text in re.split(r"(?<=\.)\s+", part)]
        text = " ".join(dict.fromkeys(sentences))  # a sentence shared by findings (no effusion) only once
        return " ".join((["Follow-up radiograph."] if follow_up else []) + [text] + devices)
    severity = findings.get("severity", 0.5)
    grade = "Subtle" if severity < 0.5 else ("Patchy" if severity < 0.8 else "Extensive")
    if label == "Normal":
        lines = [str(rng.choice(["The lungs are clear.", "Both lungs are clear."]))]
        lines.append("No pleural effusion or pneumothorax.")
    elif label == "COVID-19":
        lines = [f"{grade} ground-glass opacities in the peripheral lower zones of both lungs."]
        if findings.get("worse_side"):
            lines.append(f"Changes are more marked on the {findings['worse_side']}.")
        lines.append("No pleural effusion.")
    elif label == "Lung_Opacity":
        kind = "Dense" if severity >= 0.5 else "Ill-defined"
        lines = [f"{kind} focal consolidation in the {findings['side']} {findings['zone']} zone."]
        lines.append(str(rng.choice(["No pleural effusion.", "The remaining lung is clear."])))
    else:
        lines = [f"{grade} diffuse bilateral interstitial reticular opacities with perihilar predominance."]
        lines.append("No pleural effusion.")
    lines.append(str(rng.choice(["Heart size is normal.", "Cardiomediastinal silhouette is unremarkable."])))
    if follow_up:
        lines.insert(0, "Follow-up radiograph.")
    return " ".join(lines + devices)


# ----------------------------------------------------------------------------- public API


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
        raise ValueError(f"unknown label {label!r}; expected one of {list(CLASSES)} or findings of {list(FINDINGS)} "
                         "joined by '|'")
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

"""Coordinate frames, smooth random fields and drawing primitives shared by the renderers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage


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

"""Class- and nuisance-free anatomy of one patient: body, lungs (exact masks), heart, bones, vessels."""

from __future__ import annotations

import numpy as np

from cxrmim.data.synthetic.geometry import (
    _add_segment,
    _Anatomy,
    _Frame,
    _grid,
    _largest_component,
    _Lung,
    _rotate,
    _sigmoid,
    _smooth_field,
)


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

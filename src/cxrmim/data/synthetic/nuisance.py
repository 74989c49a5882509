"""Class-independent nuisance: support devices, film exposure and burned-in annotations."""

from __future__ import annotations

import numpy as np

from cxrmim.data.synthetic.geometry import _add_segment, _Anatomy, _grid, _smooth_field

# 5x7 glyphs of the lead side markers, drawn in a corner like a technologist's "L"/"R".
_GLYPHS = {
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
}


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

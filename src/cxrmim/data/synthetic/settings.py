"""Phantom settings, class names and the per-aspect random streams."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

CLASSES: tuple[str, ...] = ("Normal", "COVID-19", "Lung_Opacity", "Viral_Pneumonia")
FINDINGS: tuple[str, ...] = CLASSES[1:]  # the lesion types, the findings of multi-finding phantoms
NO_FINDING = "No Finding"  # the multi-finding label of an image without lesions (cxrmim.data.tasks.NO_FINDING)

# One stream per aspect, so e.g. changing the class never shifts the anatomy or the nuisance draws.
_ANATOMY, _NUISANCE, _LESION, _CLASS, _LABEL_NOISE, _FOLLOW_UP, _REPORT = range(7)
_FOLLOW_UP_RATE = 0.15  # share of odd indices that are a second image of the previous patient
_MIN_SIZE = 32


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
                f"{where} must be {len(CLASSES)} non-negative weights (not all zero) for {list(CLASSES)}, got {value!r}"
            )
    if name == "multi_finding" and not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}")
    ranges = {
        "finding_probability": (0.0, 1.0),
        "lesion_contrast": (0.0, 1.0),
        "label_noise": (0.0, 1.0),
        "nuisance_strength": (0.0, 5.0),
        "zoom": (0.5, 2.0),
    }
    if name in ranges:
        low, high = ranges[name]
        if not (_is_real(value) and low <= value <= high):
            raise ValueError(f"{where} must be a number in [{low}, {high}], got {value!r}")


def _rng(settings: PhantomSettings, index: int, stream: int) -> np.random.Generator:
    """Independent generator for one aspect of one image."""
    return np.random.default_rng([settings.seed, int(index), stream])

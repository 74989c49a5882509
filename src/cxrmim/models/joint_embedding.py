"""The joint-embedding models by method name: SimSiam and BYOL (`siamese`), SKD (`skd`), Cross (`cross`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from cxrmim.models.cross import Cross
from cxrmim.models.siamese import BYOL, SimSiam
from cxrmim.models.skd import SKD

JOINT_EMBEDDING_MODELS: dict[str, type[SimSiam | BYOL]] = {
    "simsiam": SimSiam,
    "byol": BYOL,
    "skd": SKD,
    "cross": Cross,
}


def build_joint_embedding(method: str, backbone: nn.Module, settings: dict[str, Any]) -> SimSiam | BYOL:
    """The model of `method` around `backbone`; a key that only another method reads is an error, not ignored."""
    if method not in JOINT_EMBEDDING_MODELS:
        raise ValueError(f"unknown contrastive method {method!r}; choose one of {sorted(JOINT_EMBEDDING_MODELS)}")
    model_class = JOINT_EMBEDDING_MODELS[method]
    foreign = {key for other in JOINT_EMBEDDING_MODELS.values() for key in other.method_keys}
    stray = sorted((foreign - set(model_class.method_keys)) & set(settings))
    if stray:
        raise ValueError(
            f"contrastive.{method} has {stray}, which {method} does not use (its own keys: "
            f"{list(model_class.method_keys) or 'none'}); remove them or use the method they belong to"
        )
    return model_class.from_settings(backbone, settings)

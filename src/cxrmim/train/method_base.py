"""What every pretraining method shares: the inputs its builder gets, and the `TrainingMethod` parts that do not
depend on the method (the signature of its run, unsigned settings keys, the parameter-count log line).

A method module (`cxrmim.train.mim`, `.mrm`, `.medim`, `.contrastive`, ...) defines a `MethodBase` subclass and a
`build(spec, data, run)` function; `cxrmim.registry` names that function, `cxrmim.train.pretrain` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cxrmim.recipe import JOB_KEYS
from cxrmim.registry import Method
from cxrmim.train.pretrain_data import PretrainData

# `pretrain:` keys that do not change the trained weights: the job's, the DAG's choices, and the loop's own
# (which signs them itself).
PRETRAIN_UNSIGNED_KEYS = JOB_KEYS | {"methods", "mask_ratios", "mask_ratio", "encoder", "seeds"}
# A joint-embedding method's own section (`contrastive.<method>`) holds no DAG choices.
SECTION_UNSIGNED_KEYS = JOB_KEYS


@dataclass(frozen=True)
class RunInputs:
    """What the stage hands a method's builder besides the data."""

    encoder_cfg: dict[str, Any]  # one `encoders:` entry
    settings: dict[str, Any]  # the method's config section (`pretrain:` with its own subsection, or its own block)
    mask_ratio: float | None = None  # masked and report-aware methods
    prepared_dir: Path | None = None  # the prepared cache (report methods read reports.jsonl there)
    tokenizer: Path | None = None  # the tokenizer rule's file (methods that read reports)
    text: dict[str, Any] | None = None  # the `text:` config section (methods that read reports)


class MethodBase:
    """Signature and parameter counts shared by every `TrainingMethod`; subclasses set the attributes below."""

    unsigned_keys: frozenset[str] = PRETRAIN_UNSIGNED_KEYS
    method: str
    data: PretrainData
    encoder_cfg: dict[str, Any]
    settings: dict[str, Any]
    model: nn.Module  # the loop's model (a step wrapper)
    core: nn.Module  # the method's own model (what `PretrainResult.model` returns)

    def own_signature(self) -> dict[str, Any]:
        """The method's own signature entries besides the shared ones (masking ratio, text settings, ...)."""
        return {}

    def signature(self) -> dict[str, Any]:
        """Method, architecture, the signed settings and the data's shape, plus `own_signature`."""
        return {
            "method": self.method,
            "encoder": self.encoder_cfg,
            "settings": {k: v for k, v in self.settings.items() if k not in self.unsigned_keys},
            "n_images": len(self.data.images),
            "image_size": self.data.image_size,
        } | self.own_signature()


def parameter_count(module: nn.Module, trainable: bool = False) -> int:
    """Number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def check_spec(spec: Method, run: RunInputs) -> None:
    """A method with a masking ratio gets one; a joint-embedding method gets none."""
    if spec.has_mask_ratio and run.mask_ratio is None:
        raise ValueError(f"{spec.name} is a masked-image method: pass --mask-ratio")
    if not spec.has_mask_ratio and run.mask_ratio is not None:
        raise ValueError(f"{spec.name} has no masking ratio (got {run.mask_ratio}); leave --mask-ratio out")

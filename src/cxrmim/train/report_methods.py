"""What the report-aware pretraining methods (MRM, MedIM) share: report tensors, and the TrainingMethod parts
that do not depend on the method (signature, log lines, output files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from cxrmim.io import atomic_path
from cxrmim.models.encoders import write_encoder_files
from cxrmim.text.keywords import knowledge_words
from cxrmim.text.reports import REPORTS_FILE, load_reports
from cxrmim.text.tokenizer import MASK, ReportTensors, encode_reports, load_tokenizer
from cxrmim.train.memory import Probe, mae_probes
from cxrmim.train.pretrain import UNSIGNED_KEYS
from cxrmim.train.pretrain_data import PretrainData


def load_report_tensors(prepared_dir: str | Path, tokenizer_path: str | Path, data: PretrainData,
                        text: dict[str, Any]) -> tuple[ReportTensors, int, int]:  # fmt: skip
    """Each pretraining image's report as tensors (rows aligned with `data`) -> (tensors, vocab size, [MASK] id)."""
    path = Path(prepared_dir) / REPORTS_FILE
    records = {r["index"]: r for r in load_reports(path)}
    indices = data.indices.tolist() if data.indices is not None else list(range(len(data.images)))
    missing = [i for i in indices if i not in records]
    if missing:
        raise ValueError(f"{path} has no report for {len(missing)} pretraining image(s); re-run the prepare rule")
    tokenizer = load_tokenizer(tokenizer_path)
    sentences = [records[i]["sentences"] for i in indices]
    tensors = encode_reports(tokenizer, sentences, int(text["max_length"]), knowledge_words(text))
    return tensors, tokenizer.get_vocab_size(), tokenizer.token_to_id(MASK)


class ReportMethodOutputs:
    """Signature, description and output files of a report-aware method."""

    method: str
    model: nn.Module  # the loop's model (a step wrapper)
    core: nn.Module  # the method's model: `.mae` (its image autoencoder) and `export_encoder(encoder_cfg)`
    data: PretrainData
    mask_ratio: float
    encoder_cfg: dict[str, Any]
    settings: dict[str, Any]
    text: dict[str, Any]
    reports: ReportTensors | None

    def activation_probes(self) -> list[Probe]:
        """The image autoencoder's parts (twice for MedIM's both views); the small text model is not counted."""
        both = bool((self.settings.get("medim") or {}).get("both_views", True)) and self.method == "medim"
        return mae_probes(self.core.mae, self.mask_ratio, 2.0 if both else 1.0)

    def signature(self) -> dict[str, Any]:
        """Method, ratio, architecture, the method's settings, the text settings and the data's shape."""
        return {
            "method": self.method,
            "mask_ratio": self.mask_ratio,
            "encoder": self.encoder_cfg,
            "settings": {k: v for k, v in self.settings.items() if k not in UNSIGNED_KEYS},
            "text": self.text,
            "n_images": len(self.data.images),
            "image_size": self.data.image_size,
            "patch_size": self.data.patch_size,
        }

    def describe(self) -> list[str]:
        """Method, data and parameter counts."""
        encoder = sum(p.numel() for p in self.core.mae.encoder.parameters())
        total = sum(p.numel() for p in self.core.parameters())
        words = "" if self.reports is None else f", reports of {self.reports.attention.sum(1).float().mean():.1f} tokens"
        return [
            f"method {self.method}, mask ratio {self.mask_ratio:.2f}, {len(self.data.images)} images "
            f"{self.data.image_size}px, patch {self.data.patch_size}{words}",
            f"parameters: encoder {encoder:,}, rest {total - encoder:,}",
        ]

    def write_outputs(self, out_dir: Path) -> None:
        """The encoder files (`write_encoder_files`, full image size) and autoencoder.safetensors (whole model)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.core.state_dict().items()}
        # Metadata key = method family, so readers that expect an MAE ('mae') can tell these files apart.
        family = "medim" if self.method == "medim" else "mrm"
        metadata = {family: json.dumps({"method": self.method, "signature": self.signature()}, default=str)}
        with atomic_path(out_dir / "autoencoder.safetensors") as tmp:
            save_file(state, str(tmp), metadata=metadata)
        encoder = self.core.export_encoder(self.encoder_cfg)
        write_encoder_files(encoder, self.encoder_cfg, self.data.image_size, self.data.patch_size, out_dir)


def report_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The report tensors of a loader batch under their model argument names."""
    return {"report_ids": batch["report_ids"], "report_attention": batch["report_attention"]}

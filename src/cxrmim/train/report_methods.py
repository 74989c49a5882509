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
from cxrmim.registry import Method
from cxrmim.text.keywords import knowledge_words
from cxrmim.text.reports import REPORTS_FILE, load_reports
from cxrmim.text.tokenizer import MASK, ReportTensors, encode_reports, load_tokenizer
from cxrmim.train.memory import Probe, mae_probes
from cxrmim.train.method_base import MethodBase, RunInputs, check_spec, parameter_count
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


def report_inputs(spec: Method, data: PretrainData, run: RunInputs) -> tuple[ReportTensors | None, int, int]:
    """(report tensors, vocabulary size, [MASK] id) of a report-aware run; (None, 0, 0) when it reads no reports."""
    check_spec(spec, run)
    if not spec.reads_reports:
        return None, 0, 0
    if not run.tokenizer or not run.text:
        raise ValueError(
            f"method {spec.name} reads the reports: pass --tokenizer (the tokenizer rule's file) and --text"
        )
    return load_report_tensors(run.prepared_dir, run.tokenizer, data, run.text)


class ReportMethodOutputs(MethodBase):
    """Signature, description and output files of a report-aware method."""

    core: nn.Module  # the method's model: `.mae` (its image autoencoder) and `export_encoder(encoder_cfg)`
    mask_ratio: float
    text: dict[str, Any]
    reports: ReportTensors | None

    def activation_probes(self) -> list[Probe]:
        """The image autoencoder's parts (twice for MedIM's both views); the small text model is not counted."""
        both = bool((self.settings.get("medim") or {}).get("both_views", True)) and self.method == "medim"
        return mae_probes(self.core.mae, self.mask_ratio, 2.0 if both else 1.0)

    def own_signature(self) -> dict[str, Any]:
        """Masking ratio, patch size and the text settings."""
        return {"mask_ratio": self.mask_ratio, "patch_size": self.data.patch_size, "text": self.text}

    def describe(self) -> list[str]:
        """Method, data and parameter counts."""
        encoder = parameter_count(self.core.mae.encoder)
        total = parameter_count(self.core)
        words = (
            "" if self.reports is None else f", reports of {self.reports.attention.sum(1).float().mean():.1f} tokens"
        )
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

"""Figures of the report-aware methods: drawn from trained MRM and MedIM runs."""

from __future__ import annotations

import pytest
from PIL import Image
from report_data import TEXT, build_phantom_reports
from test_medim import MEDIM
from test_pretrain import TINY_ENCODER, tiny_settings

from cxrmim.analysis.report_figures import load_report_model, make_report_figures
from cxrmim.text.tokenizer import load_tokenizer
from cxrmim.train.pretrain import run_pretraining

pytestmark = pytest.mark.slow


def test_mrm_and_medim_figures(tmp_path):
    paths = build_phantom_reports(tmp_path)
    settings = tiny_settings(epochs=1, medim=MEDIM, mrm={"text": MEDIM["text"]})
    runs = []
    for method in ("mrm", "medim"):
        runs.append(tmp_path / method)
        run_pretraining(paths["prepared"], paths["split"], paths["validity"], method, 0.5, TINY_ENCODER, settings,
                        runs[-1], tokenizer=paths["tokenizer"], text=TEXT)  # fmt: skip
    tokenizer = load_tokenizer(paths["tokenizer"])
    method, model, signature = load_report_model(runs[0] / "autoencoder.safetensors", tokenizer)
    assert method == "mrm" and signature["mask_ratio"] == 0.5 and not model.training
    written = make_report_figures(paths["prepared"], paths["split"], paths["validity"], paths["tokenizer"], runs,
                                  TEXT, tmp_path / "figures", {"dpi": 40, "n_examples": 2})  # fmt: skip
    assert [p.name for p in written] == ["mrm_reconstructions.png", "medim_masks.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.size[0] > 300 and image.size[1] > 100

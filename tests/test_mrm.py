"""MRM: whole-word masking, MLM loss on masked positions only, the super-resolution target, training end to end."""

from __future__ import annotations

import pandas as pd
import pytest
import timm
import torch
from report_data import TEXT, build_phantom_reports
from safetensors.torch import load_file
from test_pretrain import TINY_ENCODER, tiny_settings

from cxrmim.models.mrm import MaskedRecordModel, downsample, patchify
from cxrmim.models.report_text import masked_token_loss, whole_word_mask
from cxrmim.train.pretrain import run_pretraining


def test_whole_word_mask_masks_words_together_and_never_padding():
    word = torch.tensor([[0, 0, 1, 2, 2, 2, 3, -1, -1], [0, 1, 1, 2, 3, 4, 5, 6, 7]])
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        masked = whole_word_mask(word, 0.5, generator)
        assert not masked[0, 7:].any()
        for row in range(2):
            for w in word[row].unique().tolist():
                if w >= 0:
                    decisions = masked[row][word[row] == w]
                    assert decisions.all() or not decisions.any()
    many = whole_word_mask(torch.arange(64).expand(200, -1), 0.5, generator)
    assert abs(many.float().mean().item() - 0.5) < 0.02


def test_mlm_loss_ignores_unmasked_and_padding_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    targets = torch.randint(0, 11, (2, 6))
    masked = torch.tensor([[True, False, True, False, False, False], [False, False, False, True, False, False]])
    loss, count, correct = masked_token_loss(logits, targets, masked)
    expected = torch.nn.functional.cross_entropy(logits[masked], targets[masked])
    assert torch.allclose(loss, expected) and count.item() == 3
    assert correct.item() == (logits[masked].argmax(-1) == targets[masked]).sum().item()
    changed = logits.clone()
    changed[~masked] = torch.randn_like(changed[~masked]) * 100  # unmasked and padding positions
    assert torch.allclose(masked_token_loss(changed, targets, masked)[0], loss)
    assert masked_token_loss(logits, targets, torch.zeros_like(masked))[0].item() == 0.0  # nothing masked: no NaN


def tiny_mrm(super_resolution: bool) -> MaskedRecordModel:
    """An MRM on 32 px images, patch 8 (the encoder sees 16 px: a 2 x 2 grid)."""
    settings = tiny_settings(mrm={"text": {"embed_dim": 16, "depth": 1, "num_heads": 2}})
    return MaskedRecordModel(TINY_ENCODER, 32, 8, 0.5, settings, vocab_size=30, max_length=8, mask_id=4,
                             super_resolution=super_resolution)  # fmt: skip


def test_super_resolution_target_shape_and_content():
    images = torch.arange(2 * 32 * 32, dtype=torch.float32).reshape(2, 1, 32, 32)
    target = tiny_mrm(True).image_targets(images)
    assert target.shape == (2, 4, 16 * 16)  # one full-resolution 16 x 16 patch per low-resolution 8 x 8 token
    # Token (row 0, column 1) is the full-resolution block rows 0-15, columns 16-31, row-major.
    assert torch.equal(target[1, 1], images[1, 0, :16, 16:].reshape(-1))
    low = tiny_mrm(False).image_targets(images)
    assert low.shape == (2, 4, 64) and torch.equal(low, patchify(downsample(images), 8))
    assert torch.allclose(downsample(images)[0, 0, 0, 0], images[0, 0, :2, :2].mean())


def test_report_head_scores_masked_positions_only_with_the_full_loss():
    """The vocabulary projection of the masked positions alone gives the loss (and gradients) of all positions."""
    torch.manual_seed(0)
    model = tiny_mrm(True)
    latent = torch.randn(3, 5, TINY_ENCODER["kwargs"]["embed_dim"])
    ids = torch.randint(5, 30, (3, 8))
    attention = torch.ones(3, 8, dtype=torch.bool)
    attention[2, 5:] = False
    masked = (torch.rand(3, 8) < 0.5) & attention
    context = model.image_to_text(latent[:, model.mae.n_prefix :].mean(dim=1))
    inputs = torch.where(masked, torch.full_like(ids, model.mask_id), ids)
    full = masked_token_loss(model.text_head(model.text(inputs, attention, context)), ids, masked)
    full_grads = torch.autograd.grad(full[0], list(model.text.parameters()) + [model.text_head.weight])
    rows: list[int] = []
    hook = model.text_head.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[:-1].numel()))
    model.score_masked_only = True  # what a GPU runs (the CPU default projects every position: same loss)
    gathered = model.forward_report(latent, ids, attention, masked)
    hook.remove()
    assert rows == [int(masked.sum())]  # the head projected the masked positions, not all 3 x 8
    grads = torch.autograd.grad(gathered[0], list(model.text.parameters()) + [model.text_head.weight])
    assert torch.allclose(gathered[0], full[0], rtol=1e-6, atol=0) and full[0] > 0
    assert torch.equal(gathered[1], full[1]) and torch.equal(gathered[2], full[2])
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(grads, full_grads))
    nothing = model.forward_report(latent, ids, attention, torch.zeros_like(masked))
    assert nothing[0].item() == 0.0 and nothing[1].item() == 0.0  # no masked word: no NaN, nothing scored


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Prepared phantoms with reports and a tokenizer, shared by this module's training tests."""
    return build_phantom_reports(tmp_path_factory.mktemp("phantoms"))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mrm", "mrm-noreport", "mrm-nosr"])
def test_mrm_trains_and_exports_a_strict_timm_encoder(tmp_path, phantoms, method):
    paths = phantoms
    settings = tiny_settings(epochs=2, mrm={"image_loss_weight": 1.0, "word_mask_ratio": 0.5,
                                            "text": {"embed_dim": 16, "depth": 1, "num_heads": 2}})  # fmt: skip
    out = tmp_path / method
    result = run_pretraining(paths["prepared"], paths["split"], paths["validity"], method, 0.75, TINY_ENCODER,
                             settings, out, tokenizer=paths["tokenizer"], text=TEXT)  # fmt: skip
    assert result.finished
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns[4:7]) == ["image_loss", "report_loss", "word_accuracy"]
    assert history["loss"].notna().all() and (history["image_loss"] > 0).all()
    if method == "mrm-noreport":
        assert (history["report_loss"] == 0).all()
    else:
        assert (history["report_loss"] > 0).all()
        assert history["loss"].iloc[-1] == pytest.approx(
            history["image_loss"].iloc[-1] + history["report_loss"].iloc[-1], rel=0.05
        )
    encoder = timm.create_model(TINY_ENCODER["timm_name"], pretrained=False, num_classes=0, img_size=32,
                                patch_size=8, in_chans=1, **TINY_ENCODER["kwargs"])  # fmt: skip
    encoder.load_state_dict(load_file(out / "encoder.safetensors"), strict=True)
    trained = result.model.mae.encoder.blocks[0].attn.qkv.weight
    assert torch.equal(encoder.blocks[0].attn.qkv.weight, trained)
    assert encoder(torch.zeros(1, 1, 32, 32)).shape == (1, TINY_ENCODER["kwargs"]["embed_dim"])
    assert (out / "autoencoder.safetensors").is_file() and not (out / "checkpoint.pt").exists()


def test_report_methods_need_the_tokenizer(tmp_path, phantoms):
    paths = phantoms
    with pytest.raises(ValueError, match="--tokenizer"):
        run_pretraining(paths["prepared"], paths["split"], paths["validity"], "mrm", 0.75, TINY_ENCODER,
                        tiny_settings(epochs=1), tmp_path / "out")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mrm", "medim"])
def test_report_methods_under_torchrun_ddp(tmp_path, phantoms, method):
    """Two CPU ranks (gloo) through scripts/pretrain.py, as the workflow runs them: the ranks end with equal weights."""
    import json

    from test_pretrain import launch

    text_model = {"embed_dim": 16, "depth": 1, "num_heads": 2}
    settings = tiny_settings(epochs=1, mrm={"text": text_model}, medim={"text": text_model})
    out, log = tmp_path / method, tmp_path / f"{method}.log"
    args = ["--prepared", str(phantoms["prepared"]), "--split", str(phantoms["split"]), "--validity",
            str(phantoms["validity"]), "--method", method, "--mask-ratio", "0.5", "--encoder", json.dumps(TINY_ENCODER),
            "--settings", json.dumps(settings), "--tokenizer", str(phantoms["tokenizer"]), "--text", json.dumps(TEXT),
            "--out", str(out), "--log-file", str(log)]  # fmt: skip
    launch(args, 2)
    text = log.read_text()
    assert "2 rank(s)" in text and "weights agree across 2 ranks" in text
    assert (out / "encoder.safetensors").exists() and (out / "history.csv").exists()

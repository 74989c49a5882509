"""MedIM: report-guided masking (vectorised = per-sample reference), training end to end, exact resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from report_data import TEXT, build_phantom_reports
from safetensors.torch import load_file
from test_pretrain import TINY_ENCODER, tiny_settings

from cxrmim.models.masking import guided_plan, masking_for
from cxrmim.models.medim import choose_sentences, kwm_scores, sdm_scores
from cxrmim.train.pretrain import run_pretraining

MEDIM = {"mask_high": 0.9, "mask_low": 0.1, "temperature": 0.1, "align_weight": 1.0, "kwm_weight": 1.0,
         "sdm_weight": 1.0, "min_sentence_words": 3, "text": {"embed_dim": 16, "depth": 1, "num_heads": 2}}  # fmt: skip


def slow_guided_mask(scores: np.ndarray, noise: np.ndarray, n_masked: int, high: float, low: float) -> np.ndarray:
    """Per-sample reference of MedIM's rule (as the reference code loops over samples in numpy)."""
    masks = np.zeros(scores.shape, dtype=np.float32)
    for i in range(len(scores)):
        median = np.median(scores[i])
        picked = [noise[i, 0, j] < (high if scores[i, j] > median else low) for j in range(scores.shape[1])]
        priority = np.array(picked, dtype=np.float64) + noise[i, 1]
        masks[i, np.argsort(-priority, kind="stable")[:n_masked]] = 1.0
    return masks


def test_guided_plan_equals_the_per_sample_reference():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(16, 49, generator=generator)
    scores[3] = 1.0  # a flat map: nothing above the median
    noise = torch.rand(16, 2, 49, generator=generator)
    plan = guided_plan(scores, noise, 24, 0.9, 0.1)
    expected = slow_guided_mask(scores.numpy(), noise.numpy(), 24, 0.9, 0.1)
    assert np.array_equal(plan.mask.numpy(), expected)
    assert plan.ids_keep.shape == (16, 25) and (plan.mask.sum(1) == 24).all()
    assert torch.equal(torch.gather(plan.mask, 1, plan.ids_keep), torch.zeros(16, 25))


def test_guided_masking_prefers_high_scores_with_the_random_masking_signature():
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(200, 64, generator=generator)
    plan = masking_for("report_guided")(200, 64, 0.5, scores, generator, "cpu")
    above = scores > scores.median(dim=1, keepdim=True).values
    assert plan.mask[above].mean() > 0.85 and plan.mask[~above].mean() < 0.15
    with pytest.raises(ValueError, match="score map"):
        masking_for("report_guided")(2, 64, 0.5, None, generator, "cpu")


def test_kwm_and_sdm_scores_equal_loops():
    generator = torch.Generator().manual_seed(2)
    attention = torch.rand(3, 7, 10, generator=generator)
    keyword = torch.rand(3, 7, generator=generator) > 0.6
    in_sentence = torch.rand(3, 7, generator=generator) > 0.5
    for fn, flags in ((kwm_scores, keyword), (sdm_scores, in_sentence)):
        expected = torch.zeros(3, 10)
        for b in range(3):
            for w in range(7):
                if flags[b, w]:
                    expected[b] += attention[b, w]
        assert torch.allclose(fn(attention, flags), expected)


def slow_choose(sentence: list[int], word: list[int], min_words: int, noise: list[float]) -> list[bool]:
    """Per-report reference of the SDM sentence choice."""
    words: dict[int, set] = {}
    for s, w in zip(sentence, word):
        if s >= 0:
            words.setdefault(s, set()).add(w)
    eligible = [s for s, ws in words.items() if len(ws) > min_words] or list(words)
    if not eligible:
        return [False] * len(sentence)
    chosen = max(eligible, key=lambda s: noise[s])
    return [s == chosen for s in sentence]


def test_sentence_choice_equals_the_per_sample_reference():
    sentence = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 2, -1], [0, 0, 1, 1, 1, -1, -1, -1, -1, -1], [-1] * 10])
    word = torch.tensor([[0, 1, 2, 3, 4, 4, 5, 6, 7, -1], [0, 1, 2, 3, 4, -1, -1, -1, -1, -1], [-1] * 10])
    generator = torch.Generator().manual_seed(3)
    for _ in range(10):
        noise = torch.rand(3, 10, generator=generator)
        chosen = choose_sentences(sentence, word, 3, noise)
        for b in range(3):
            assert chosen[b].tolist() == slow_choose(sentence[b].tolist(), word[b].tolist(), 3, noise[b].tolist())
    # Report 0: sentence 1 is the only one with more than 3 words (4 distinct words over 5 tokens).
    assert chosen[0].tolist() == [False] * 3 + [True] * 5 + [False] * 2


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Prepared phantoms with reports and a tokenizer, shared by this module's training tests."""
    return build_phantom_reports(tmp_path_factory.mktemp("phantoms"))


@pytest.mark.slow
def test_medim_trains_and_exports_a_strict_timm_encoder(tmp_path, phantoms):
    out = tmp_path / "medim"
    result = run_pretraining(phantoms["prepared"], phantoms["split"], phantoms["validity"], "medim", 0.5,
                             TINY_ENCODER, tiny_settings(epochs=2, medim=MEDIM), out, tokenizer=phantoms["tokenizer"],
                             text=TEXT)  # fmt: skip
    assert result.finished
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns[4:7]) == ["align_loss", "kwm_loss", "sdm_loss"]
    assert (history[["align_loss", "kwm_loss", "sdm_loss"]] > 0).all().all()
    assert history["loss"].iloc[-1] == pytest.approx(
        history[["align_loss", "kwm_loss", "sdm_loss"]].iloc[-1].sum(), rel=1e-4
    )
    encoder = timm.create_model(TINY_ENCODER["timm_name"], pretrained=False, num_classes=0, img_size=32,
                                patch_size=8, in_chans=1, **TINY_ENCODER["kwargs"])  # fmt: skip
    encoder.load_state_dict(load_file(out / "encoder.safetensors"), strict=True)
    assert torch.equal(encoder.blocks[0].attn.qkv.weight, result.model.mae.encoder.blocks[0].attn.qkv.weight)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["medim", "mrm"])
def test_report_methods_resume_exactly(tmp_path, phantoms, method):
    """Killed after one epoch and rerun = uninterrupted, bit for bit (the shared loop's checkpoints)."""
    settings = tiny_settings(epochs=2, medim=MEDIM, mrm={"text": MEDIM["text"]})
    args = (phantoms["prepared"], phantoms["split"], phantoms["validity"], method, 0.5, TINY_ENCODER, settings)
    kwargs = {"tokenizer": phantoms["tokenizer"], "text": TEXT}
    whole = run_pretraining(*args, tmp_path / "whole", **kwargs)
    first = run_pretraining(*args, tmp_path / "cut", stop_after_epochs=1, **kwargs)
    assert not first.finished and (tmp_path / "cut" / "checkpoint.pt").is_file()
    resumed = run_pretraining(*args, tmp_path / "cut", **kwargs)
    assert resumed.finished and resumed.epochs_run == 1
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_split_views_reconstruct_each_half_under_its_own_mask():
    """both_views False: one MAE pass whose KWM loss is that of the first half alone, SDM that of the second."""
    from cxrmim.models.medim import ReportGuidedMIM

    torch.manual_seed(0)
    settings = tiny_settings(medim=dict(MEDIM, both_views=False))
    model = ReportGuidedMIM(TINY_ENCODER, 32, 8, 0.5, settings, vocab_size=20, max_length=6).eval()
    images = torch.randn(6, 1, 32, 32)
    generator = torch.Generator().manual_seed(1)
    kwm = guided_plan(torch.rand(6, 16, generator=generator), torch.rand(6, 2, 16, generator=generator), 8, 0.9, 0.1)
    sdm = guided_plan(torch.rand(6, 16, generator=generator), torch.rand(6, 2, 16, generator=generator), 8, 0.9, 0.1)
    kwm_loss, sdm_loss = model.reconstruct_split(images, kwm, sdm)
    rows = lambda plan, part: type(plan)(
        *(t[part] for t in (plan.ids_keep, plan.mask, plan.ids_restore, plan.fallback))
    )  # noqa: E731
    with torch.no_grad():
        assert torch.allclose(kwm_loss, model.reconstruct(images[:3], rows(kwm, slice(0, 3))), atol=1e-6)
        assert torch.allclose(sdm_loss, model.reconstruct(images[3:], rows(sdm, slice(3, 6))), atol=1e-6)


@pytest.mark.slow
def test_cheap_medim_settings_train(tmp_path, phantoms):
    settings = tiny_settings(epochs=1, medim=dict(MEDIM, both_views=False, align_encoder_grad=False))
    result = run_pretraining(phantoms["prepared"], phantoms["split"], phantoms["validity"], "medim", 0.5,
                             TINY_ENCODER, settings, tmp_path / "cheap", tokenizer=phantoms["tokenizer"], text=TEXT)  # fmt: skip
    history = pd.read_csv(tmp_path / "cheap" / "history.csv")
    assert result.finished and (history[["align_loss", "kwm_loss", "sdm_loss"]] > 0).all().all()


def test_kwm_masking_rule_masks_lesion_patches_given_attention_on_the_lesion():
    """The masking side of KWM, with an oracle attention (each finding word on its lesion patches; the learned
    alignment is tested by test_learned_alignment_makes_kwm_mask_the_lesion): KWM masks the lesion patches (from
    the phantoms' lesion masks) far more often than random masking at the same ratio. Checks keyword matching on
    real report text (multi-word terms), score summation, the median rule and the patch order against the masks."""
    from cxrmim.data.patches import patch_coverage
    from cxrmim.data.synthetic import PhantomSettings, generate_dataset
    from cxrmim.models.masking import random_masking
    from cxrmim.text.keywords import knowledge_words
    from cxrmim.text.reports import clean_report, split_sentences
    from cxrmim.text.tokenizer import encode_reports, train_tokenizer

    data = generate_dataset(PhantomSettings.from_config({"n_images": 40, "image_size": 64, "seed": 5,
                                                         "class_balance": [0, 0, 1, 0]}))  # fmt: skip
    # Focal findings: a diffuse one covers more patches than half of them, which no 50% mask can cover.
    sick = [i for i, label in enumerate(data["true_labels"]) if label == "Lung_Opacity"]
    sentences = [split_sentences(clean_report(data["reports"][i])) for i in sick]
    tokenizer = train_tokenizer([" ".join(s) for s in sentences], 300)
    reports = encode_reports(tokenizer, sentences, 40, knowledge_words({}))
    lesion = patch_coverage(torch.from_numpy(data["lesions"][sick]).unsqueeze(1).float(), 8) > 0  # (B, 64)
    finding_words = {"consolidation"}
    names_finding = torch.tensor([[tokenizer.id_to_token(int(t)) in finding_words for t in row] for row in reports.ids])
    assert (names_finding & reports.keyword).any(dim=1).all()  # every sick report's finding is a knowledge term
    on_lesion = lesion.float() / lesion.float().sum(dim=1, keepdim=True)
    uniform = torch.full_like(on_lesion, 1.0 / on_lesion.shape[1])
    attention = torch.where(names_finding.unsqueeze(-1), on_lesion.unsqueeze(1), uniform.unsqueeze(1))
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(len(sick), 2, 64, generator=generator)
    kwm = guided_plan(kwm_scores(attention, reports.keyword), noise, 32, 0.9, 0.1).mask.bool()
    random = random_masking(len(sick), 64, 0.5, None, generator).mask.bool()
    kwm_rate = (kwm & lesion).sum() / lesion.sum()
    random_rate = (random & lesion).sum() / lesion.sum()
    assert kwm_rate > 0.8 and random_rate < 0.6 and kwm_rate > random_rate + 0.25


def slow_gloria_scores(words: torch.Tensor, patches: torch.Tensor, real: torch.Tensor, temperature: float,
                       word_temperature: float) -> torch.Tensor:  # fmt: skip
    """Per (report, image) pair reference of GLoRIA's word-image score over the report's real words."""
    scores = torch.zeros(len(words), len(patches))
    for i in range(len(words)):
        own = words[i][real[i]]
        for j in range(len(patches)):
            attention = torch.softmax(own @ patches[j].T / temperature, dim=-1)
            context = attention @ patches[j]
            cosine = torch.nn.functional.cosine_similarity(context, own, dim=-1)
            scores[i, j] = torch.log(torch.exp(cosine / word_temperature).sum())
    return scores


def test_cross_image_scores_equal_the_per_pair_reference():
    from cxrmim.models.medim import cross_attention, word_image_scores

    generator = torch.Generator().manual_seed(4)
    words = torch.nn.functional.normalize(torch.randn(4, 6, 8, generator=generator), dim=-1)
    patches = torch.nn.functional.normalize(torch.randn(4, 10, 8, generator=generator), dim=-1)
    real = torch.tensor(
        [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool
    )
    attention = cross_attention(words, patches, 0.1)
    assert attention.shape == (4, 4, 6, 10)
    assert torch.allclose(
        word_image_scores(attention, words, patches, real),
        slow_gloria_scores(words, patches, real, 0.1, 0.2),
        atol=1e-5,
    )
    assert torch.allclose(
        word_image_scores(attention, words, patches, real, word_temperature=0.5),
        slow_gloria_scores(words, patches, real, 0.1, 0.5),
        atol=1e-5,
    )


def test_local_slots_bound_the_knowledge_tokens_of_the_cross_image_loss():
    from cxrmim.models.medim import ReportGuidedMIM

    def loss(slots: int, n_keywords: int) -> torch.Tensor:
        torch.manual_seed(0)
        medim = {**MEDIM, "local_slots": slots, "word_temperature": 0.5}
        model = ReportGuidedMIM(TINY_ENCODER, 32, 8, 0.5, tiny_settings(medim=medim), vocab_size=20, max_length=6)
        generator = torch.Generator().manual_seed(1)
        images, ids = torch.randn(3, 1, 32, 32, generator=generator), torch.randint(5, 20, (3, 6), generator=generator)
        keyword = torch.zeros(3, 6, dtype=torch.bool)
        keyword[:, :n_keywords] = True
        with torch.no_grad():
            return model.eval().align(images, ids, torch.ones(3, 6, dtype=torch.bool), keyword)[1]

    assert torch.allclose(loss(2, 2), loss(6, 2))  # slots beyond the knowledge tokens change nothing
    assert not torch.allclose(loss(2, 4), loss(6, 4))  # fewer slots than knowledge tokens leave some out


def test_alignment_ignores_padding_and_returns_each_report_over_its_own_image():
    from cxrmim.models.medim import ReportGuidedMIM

    torch.manual_seed(0)
    model = ReportGuidedMIM(TINY_ENCODER, 32, 8, 0.5, tiny_settings(medim=MEDIM), vocab_size=20, max_length=6).eval()
    images = torch.randn(3, 1, 32, 32)
    ids = torch.randint(5, 20, (3, 6))
    real = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        attention, loss = model.align(images, ids, real)
        _, loss_other_padding = model.align(images, torch.where(real, ids, torch.randint(5, 20, (3, 6))), real)
        alone, _ = model.align(images[1:2], ids[1:2], real[1:2])
    assert attention.shape == (3, 6, 16) and torch.isfinite(loss)
    assert torch.allclose(loss, loss_other_padding, atol=1e-6)
    assert torch.allclose(attention[1], alone[0], atol=1e-6)  # report 1 over image 1, whatever else is in the batch


@pytest.mark.slow
def test_learned_alignment_makes_kwm_mask_the_lesion():
    """Trained from random init on phantoms (alignment loss alone, 320 steps), the word-to-patch attention finds the
    lesion: KWM masks the focal lesion patches of held-out phantoms clearly more often than random masking at the
    same ratio. Measured (seeds 0/1/2): GLoRIA's cross-image loss +0.15/+0.09/+0.07; the earlier within-report local
    loss +0.03/+0.00/+0.01."""
    from cxrmim.data.synthetic import PhantomSettings
    from cxrmim.diagnostics.lesion_masking import lesion_masking_rates, phantom_reports, train_alignment
    from cxrmim.models.medim import ReportGuidedMIM

    phantoms = {"image_size": 64, "lesion_contrast": 0.8}  # a clearly visible lesion: a short run can find it
    train = phantom_reports(
        PhantomSettings.from_config({**phantoms, "n_images": 512, "seed": 11}), 8, 32, vocab_size=300
    )
    test = phantom_reports(PhantomSettings.from_config({**phantoms, "n_images": 64, "seed": 12, "class_balance": [0, 0, 1, 0]}),
                           8, 32, tokenizer=train.tokenizer)  # fmt: skip
    torch.manual_seed(0)
    encoder = {
        "timm_name": "vit_tiny_patch16_224",
        "kwargs": {"embed_dim": 64, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0},
    }
    settings = tiny_settings(
        medim=dict(MEDIM, align_encoder_grad=True, text={"embed_dim": 32, "depth": 1, "num_heads": 2})
    )
    model = ReportGuidedMIM(encoder, 64, 8, 0.5, settings, train.tokenizer.get_vocab_size(), 32)
    train_alignment(model, train, epochs=20, batch_size=32, lr=1e-3, seed=0)
    kwm_rate, random_rate = lesion_masking_rates(model, test, 0.5, seed=0)
    assert kwm_rate > random_rate + 0.05, (kwm_rate, random_rate)


def test_keyword_slots_take_each_reports_first_knowledge_tokens_in_order():
    from cxrmim.models.medim import keyword_slots

    keyword = torch.tensor([[0, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    index, filled = keyword_slots(keyword, 3)
    assert index[0].tolist() == [1, 3, 4] and filled[0].all()
    assert not filled[1].any()
    assert index[2, 0] == 0 and filled[2].tolist() == [True, False, False]

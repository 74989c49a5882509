"""Reports as data: cleaning, sentences, WordPiece tokenizer, knowledge words and phantom lesion masks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrmim.data.synthetic import PhantomSettings, render_phantom
from cxrmim.text.keywords import (
    KnowledgeWords,
    is_negated,
    keyword_pattern,
    keyword_spans,
    knowledge_words,
    read_keywords,
)
from cxrmim.text.reports import clean_report, load_reports, split_sentences, write_reports
from cxrmim.text.stage import build_tokenizer
from cxrmim.text.tokenizer import PAD, UNK, encode_reports, load_tokenizer, save_tokenizer, train_tokenizer

REPORTS = [
    "Patchy ground-glass opacities in the peripheral lower zones of both lungs. No pleural effusion.",
    "The lungs are clear.  No pleural   effusion or pneumothorax. Heart size is normal.",
    "Dense focal consolidation in the right upper zone. The remaining lung is clear.",
    "Follow-up radiograph. Diffuse bilateral interstitial reticular opacities with perihilar predominance.",
] * 5


def test_clean_report_drops_deidentification_and_whitespace():
    assert clean_report("Dr. ___ saw  the\n patient [**Name 123**] on XXXX .") == "Dr. saw the patient on."
    assert clean_report(None) == "" and clean_report(float("nan")) == ""


def test_split_sentences():
    assert split_sentences("The lungs are clear. No effusion! Heart normal") == [
        "The lungs are clear.",
        "No effusion!",
        "Heart normal",
    ]
    assert split_sentences("") == []


def test_write_reports_roundtrip(tmp_path):
    manifest = pd.DataFrame({"index": [0, 1], "id": ["a", "b"], "report": ["A ___ b.  C d.", ""]})
    path = write_reports(tmp_path, manifest)
    records = load_reports(path)
    assert records[0] == {"index": 0, "id": "a", "report": "A b. C d.", "sentences": ["A b.", "C d."]}
    assert records[1]["sentences"] == []


def test_load_reports_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="reports.jsonl"):
        load_reports(tmp_path / "reports.jsonl")


def test_tokenizer_round_trip_and_determinism(tmp_path):
    first, second = train_tokenizer(REPORTS, 200), train_tokenizer(REPORTS, 200)
    assert first.to_str() == second.to_str()  # same reports -> byte-identical tokenizer
    save_tokenizer(first, tmp_path / "tok.json")
    loaded = load_tokenizer(tmp_path / "tok.json")
    text = "Dense focal consolidation in the right upper zone."
    encoding = loaded.encode(text, add_special_tokens=False)
    assert loaded.decode(encoding.ids) == text.lower()
    assert "consolidation" in encoding.tokens  # frequent words are whole tokens
    unseen = loaded.encode("Pneumomediastinum", add_special_tokens=False)  # unseen: split into known pieces
    assert UNK not in unseen.tokens and loaded.decode(unseen.ids) == "pneumomediastinum"
    assert PAD in loaded.get_vocab() and loaded.get_vocab_size() <= 200
    assert train_tokenizer(REPORTS, 60).get_vocab_size() < 200  # the vocabulary size is honoured


def test_tokenizer_rejects_foreign_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(bad)


def test_keywords_match_multiword_terms_whole_words_only():
    pattern = keyword_pattern(["pleural effusion", "effusion", "opacity", "ground-glass opacity", "lung"])
    text = "No pleural  effusion. Ground glass opacity; lungs and lung-base clear, effusions absent, lung."
    found = [text[a:b].lower() for a, b in keyword_spans(text, pattern)]
    # The phrase wins over its word; spacing and hyphen variants match; 'lungs'/'effusions' do not match 'lung'.
    assert found == ["pleural  effusion", "ground glass opacity", "lung"]


def test_shipped_keywords_name_their_source():
    terms = read_keywords()
    assert "pleural effusion" in terms and "consolidation" in terms
    from cxrmim.text.keywords import DEFAULT_KEYWORDS

    assert "Fleischner" in DEFAULT_KEYWORDS.read_text()
    assert read_keywords(extra=["Tension Pneumothorax"])[-1] != "" and "tension pneumothorax" in read_keywords(
        extra=["Tension  Pneumothorax"]
    )


def test_encode_reports_words_sentences_keywords():
    tokenizer = train_tokenizer(REPORTS, 200)
    sentences = [split_sentences(clean_report(REPORTS[1])), []]
    knowledge = KnowledgeWords(keyword_pattern(["pleural effusion", "lungs"]), skip_negated=False)
    tensors = encode_reports(tokenizer, sentences, 24, knowledge)
    row = tensors.attention[0]
    tokens = [tokenizer.id_to_token(i) for i in tensors.ids[0][row].tolist()]
    assert tokens[:4] == ["the", "lungs", "are", "clear"]
    assert tensors.sentence[0][row].tolist() == [0] * 5 + [1] * 6 + [2] * 5
    flagged = [t for t, k in zip(tokens, tensors.keyword[0][row].tolist()) if k]
    assert flagged == ["lungs", "pleural", "effusion"]
    words = tensors.word[0][row].tolist()
    assert words == sorted(words) and words[0] == 0
    assert not tensors.attention[1].any() and (tensors.word[1] == -1).all()
    assert (tensors.ids[0][~row] == tokenizer.token_to_id(PAD)).all()


def test_negated_terms_are_not_knowledge_words():
    """NegEx-style scope: a cue before the term (within its clause, not past 'but') or after it negates it."""
    text = ("No pleural effusion or pneumothorax. Heart size is normal. Dense focal consolidation in the right "
            "upper zone. The remaining lung is clear. No effusion, but a small nodule. Without interval change, "
            "opacity in the left lower zone is unchanged.")  # fmt: skip
    knowledge = knowledge_words({"skip_negated": True})
    kept = [text[a:b].lower() for a, b in knowledge.spans(text)]
    assert kept == ["dense focal consolidation"[6:], "upper zone", "nodule", "opacity", "lower zone"]
    everything = [text[a:b].lower() for a, b in KnowledgeWords(knowledge.pattern, skip_negated=False).spans(text)]
    assert {"pleural effusion", "pneumothorax", "heart", "lung", "effusion"} <= set(everything)
    assert is_negated("no acute change. lungs clear", 17, 22) is False  # a cue in the previous sentence
    assert knowledge_words({}).skip_negated is False  # off unless the config asks (docs/methods.md, "MedIM")


def test_encode_reports_drops_negated_knowledge_words():
    tokenizer = train_tokenizer(REPORTS, 200)
    sentences = [split_sentences(clean_report(REPORTS[2]))]
    tensors = encode_reports(tokenizer, sentences, 24, knowledge_words({"skip_negated": True}))
    row = tensors.attention[0]
    tokens = [tokenizer.id_to_token(i) for i in tensors.ids[0][row].tolist()]
    flagged = [t for t, k in zip(tokens, tensors.keyword[0][row].tolist()) if k]
    assert flagged[:2] == ["focal", "consolidation"] and "lung" not in flagged  # "the remaining lung is clear"


def test_tokenizer_stage_uses_training_reports_only(tmp_path):
    manifest = pd.DataFrame(
        {"index": [0, 1, 2], "id": ["a", "b", "c"], "report": ["alpha beta.", "gamma delta.", "epsilon zeta."]}
    )
    write_reports(tmp_path, manifest)
    pd.DataFrame({"index": [0, 1, 2], "id": ["a", "b", "c"], "part": ["train", "val", "test"]}).to_csv(
        tmp_path / "split.csv", index=False
    )
    build_tokenizer(tmp_path / "reports.jsonl", tmp_path / "split.csv", {"vocab_size": 100}, tmp_path / "tok.json")
    vocab = load_tokenizer(tmp_path / "tok.json").get_vocab()
    assert "alpha" in vocab and "gamma" not in vocab and "epsilon" not in vocab
    # A user's tokenizer file is adopted as is.
    build_tokenizer(tmp_path / "reports.jsonl", tmp_path / "split.csv", {"tokenizer": str(tmp_path / "tok.json")},
                    tmp_path / "copy.json")  # fmt: skip
    assert (
        json.loads((tmp_path / "copy.json").read_text())["model"]["vocab"]
        == json.loads((tmp_path / "tok.json").read_text())["model"]["vocab"]
    )


def test_phantom_lesion_mask_lies_in_the_lungs():
    settings = PhantomSettings.from_config({"n_images": 8, "image_size": 64})
    opacity = render_phantom(settings, 0, label="Lung_Opacity")
    normal = render_phantom(settings, 0, label="Normal")
    assert opacity.lesion.any() and not normal.lesion.any()
    assert (opacity.lesion <= opacity.mask).all()  # findings lie inside the lungs
    assert opacity.lesion.sum() < 0.5 * opacity.mask.sum()  # a focal finding, not the whole lung
    assert np.array_equal(opacity.image[opacity.mask == 0], normal.image[normal.mask == 0])

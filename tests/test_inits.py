"""Run and init names: masked runs carry a ratio, contrastive runs (SimSiam, BYOL) none; one parser for all."""

from __future__ import annotations

import pytest

from cxrmim.inits import CONTRASTIVE_METHODS, MASKED_METHODS, PRETRAIN_METHODS, parse_init, pretrain_run_name


def test_contrastive_methods_are_registered_with_their_table_labels() -> None:
    assert PRETRAIN_METHODS["simsiam"] == "SimSiam" and PRETRAIN_METHODS["byol"] == "BYOL"
    assert set(CONTRASTIVE_METHODS) | set(MASKED_METHODS) == set(PRETRAIN_METHODS)
    assert not set(CONTRASTIVE_METHODS) & set(MASKED_METHODS)


@pytest.mark.parametrize("method", ["simsiam", "byol"])
def test_contrastive_run_name_round_trips_without_a_ratio(method: str) -> None:
    name = pretrain_run_name(method, None, "resnet10t", 2)
    assert name == f"{method}_resnet10t_s2"
    spec = parse_init(name)
    assert (spec.kind, spec.encoder_key, spec.mask_ratio, spec.pretrain_seed) == (method, "resnet10t", None, 2)
    assert spec.pretrained and spec.needs_weights and spec.method == PRETRAIN_METHODS[method]


def test_masked_names_are_unchanged() -> None:
    spec = parse_init(pretrain_run_name("rgmim", 0.75, "vit-cpu", 0))
    assert spec.name == "rgmim_r0.75_vit-cpu_s0" and spec.mask_ratio == 0.75 and spec.kind == "rgmim"
    assert parse_init("scratch_resnet10t").kind == "scratch"


def test_ratio_mismatches_are_errors() -> None:
    with pytest.raises(ValueError, match="no masking ratio"):
        pretrain_run_name("simsiam", 0.75, "resnet10t", 0)
    with pytest.raises(ValueError, match="needs a masking ratio"):
        pretrain_run_name("mae", None, "vit-cpu", 0)
    for name in ("simsiam_r0.75_resnet10t_s0", "mae_vit-cpu_s0", "simsiam_resnet10t", "byol_s0"):
        with pytest.raises(ValueError, match="unknown init"):
            parse_init(name)

"""Config files shipped with the repository validate; bad keys and values are named."""

import pytest

from cxrmim.config import REPO_ROOT, load_config, merge, validate_config


@pytest.mark.parametrize("override", ["configs/paper.yaml", "tests/configs/tiny.yaml", "tests/configs/contrastive.yaml"])
def test_shipped_configs_validate(override):
    config = load_config(REPO_ROOT / override)
    assert config["dataset"]["name"]


def test_unknown_key_and_bad_value_are_named():
    config = load_config()
    with pytest.raises(ValueError, match="pretrain.*'epoch' was unexpected"):
        validate_config(merge(config, {"pretrain": {"epoch": 3}}))
    with pytest.raises(ValueError, match="split.test_fraction"):
        validate_config(merge(config, {"split": {"test_fraction": 1.5}}))
    with pytest.raises(ValueError, match="finetune.inits"):
        validate_config(merge(config, {"finetune": {"inits": ["pretrained!"]}}))


def test_merge_is_recursive():
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}

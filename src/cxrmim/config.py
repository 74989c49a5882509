"""Loading and validating workflow configs outside Snakemake (scripts, tests), with the same schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cxrmim.data.splits import budget_tag, parse_budget

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "workflow_config.yaml"


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (override wins), the way Snakemake merges several --configfile files."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def validate_config(config: dict[str, Any], source: str = "config") -> None:
    """Raise ValueError naming the offending key path and the fix when the config breaks the schema."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"  {where}: {err.message}")
        raise ValueError(f"{source}: invalid configuration (see {SCHEMA_PATH.name}):\n" + "\n".join(lines))
    check_consistency(config, source)


def check_consistency(config: dict[str, Any], source: str = "config") -> None:
    """Rules across sections that a JSON schema cannot express (also called by the Snakefile before any job)."""
    image_size = (config.get("prepare") or {}).get("image_size")
    patch_size = (config.get("patch_validity") or {}).get("patch_size")
    if isinstance(image_size, int) and isinstance(patch_size, int) and 0 < image_size < patch_size:
        raise ValueError(
            f"{source}: patch_validity.patch_size {patch_size} is larger than prepare.image_size "
            f"{image_size}: the image would hold no patch; use a patch size below the image size "
            f"(e.g. {max(1, image_size // 8)}) or a larger image (a multiple of {patch_size})"
        )
    if isinstance(image_size, int) and isinstance(patch_size, int) and patch_size > 0 and image_size % patch_size:
        fits = [p for p in range(patch_size - 4, patch_size + 5) if p > 0 and image_size % p == 0]
        raise ValueError(
            f"{source}: patch_validity.patch_size {patch_size} does not divide prepare.image_size {image_size}; "
            f"the ViT needs a whole number of patches per side: use a patch size such as {fits or [1]} or an "
            f"image size that is a multiple of {patch_size} (e.g. {image_size - image_size % patch_size})"
        )
    budgets = config.get("label_fractions") or {}
    if "fractions" in budgets and not (budgets.get("fractions") or budgets.get("counts")):
        raise ValueError(
            f"{source}: label_fractions has no budget; list label_fractions.fractions (e.g. [0.1, 1.0]) "
            "or label_fractions.counts (numbers of labelled images, e.g. [1000])"
        )
    # An entry for a budget this config does not run is ignored (a config that changes `fractions` need not
    # restate the default's entries), but it must be spelled as the budget's file names are, or it never applies.
    for tag in budgets.get("seeds_by_budget") or {}:
        kind, value = parse_budget(tag)
        canonical = budget_tag(fraction=value) if kind == "fraction" else budget_tag(count=int(value))
        if tag != canonical:
            raise ValueError(
                f"{source}: label_fractions.seeds_by_budget key {tag!r} is not spelled as the budget's "
                f"files are; write {canonical!r}"
            )


def read_config_source(source: str | Path) -> dict[str, Any]:
    """One config source: inline JSON (as rules pass settings) or a YAML/JSON file (JSON is valid YAML)."""
    text = str(source)
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"inline config is not valid JSON ({err}); pass a JSON object or a file") from err
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; pass an existing YAML/JSON file")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err}); fix the file") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a config file must be a mapping of sections, not {type(config).__name__}")
    return config


def load_config(*sources: str | Path, defaults: bool = True) -> dict[str, Any]:
    """The config as a workflow run sees it: the default merged with each source (file or inline JSON), validated.

    With defaults=False only the sources are merged and nothing is validated: for configs that are already
    complete (the merged config a rule passes) or partial on purpose (a few sections for one stage).
    """
    chain = [DEFAULT_CONFIG, *sources] if defaults else list(sources)
    config: dict[str, Any] = {}
    for source in chain:
        config = merge(config, read_config_source(source))
    if defaults:
        validate_config(config, source=", ".join(str(p) for p in chain))
    return config

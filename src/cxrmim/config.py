"""Loading and validating workflow configs outside Snakemake (scripts, tests), with the same schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

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
    if isinstance(image_size, int) and isinstance(patch_size, int) and patch_size > 0 and image_size % patch_size:
        fits = [p for p in range(patch_size - 4, patch_size + 5) if p > 0 and image_size % p == 0]
        raise ValueError(
            f"{source}: patch_validity.patch_size {patch_size} does not divide prepare.image_size {image_size}; "
            f"the ViT needs a whole number of patches per side: use a patch size such as {fits or [1]} or an "
            f"image size that is a multiple of {patch_size} (e.g. {image_size - image_size % patch_size})"
        )


def load_config(*paths: str | Path) -> dict[str, Any]:
    """Load the default config merged with any override files, validated."""
    config: dict[str, Any] = {}
    for path in (DEFAULT_CONFIG, *paths):
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    validate_config(config, source=", ".join(str(p) for p in (DEFAULT_CONFIG, *paths)))
    return config

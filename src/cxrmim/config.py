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


def load_config(*paths: str | Path) -> dict[str, Any]:
    """Load the default config merged with any override files, validated."""
    config: dict[str, Any] = {}
    for path in (DEFAULT_CONFIG, *paths):
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    validate_config(config, source=", ".join(str(p) for p in (DEFAULT_CONFIG, *paths)))
    return config

"""Small helpers every stage script uses: logging setup and a friendly top-level error handler."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to the rule's log file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


def run_main(main: Callable[[], object]) -> None:
    """Run a stage; user errors (bad files, bad config) end with one clear message and exit code 1."""
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        logging.getLogger("cxrmim").error("%s", err)
        sys.exit(1)


def parse_json_arg(value: str) -> dict[str, Any]:
    """Read a settings argument given either as inline JSON or as a path to a JSON file."""
    text = Path(value).read_text() if not value.lstrip().startswith("{") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"invalid JSON settings ({err}); pass a JSON object or a .json file") from err

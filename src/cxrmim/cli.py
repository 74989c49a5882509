"""Small helpers every stage script uses: logging setup and a friendly top-level error handler."""

from __future__ import annotations

import json
import logging
import sys
import traceback
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
    """Run a stage: user errors end with one clear message, anything else with its traceback, both in the log.

    Either way the process exits with code 1, so Snakemake marks the job failed and prints the log.
    """
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        _log_to_argv_file()
        if _raised_in_library(err):  # e.g. pandas' EmptyDataError: a bare message would not say which file or why
            logging.getLogger("cxrmim").exception("%s (raised inside a library; traceback follows)", err)
        else:
            logging.getLogger("cxrmim").error("%s", err)
        sys.exit(1)
    except Exception:  # noqa: BLE001 - the point is that nothing escapes without landing in the log
        _log_to_argv_file()
        logging.getLogger("cxrmim").exception("unexpected error; traceback follows (please report it)")
        sys.exit(1)


def _raised_in_library(err: BaseException) -> bool:
    """Whether the innermost frame of the error lies outside the cxrmim package and the stage scripts' folder."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    ours = (Path(__file__).resolve().parent, Path(sys.argv[0]).resolve().parent)
    return not any(Path(frames[-1].filename).resolve().is_relative_to(folder) for folder in ours)


def _log_to_argv_file() -> None:
    """Set up logging from the command's own `--log FILE` when the stage failed before doing so itself."""
    if any(isinstance(h, logging.FileHandler) for h in logging.getLogger().handlers):
        return
    argv = sys.argv[1:]
    log_file = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--log"), None)
    log_file = log_file or next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--log=")), None)
    setup_logging(log_file)


def parse_json_arg(value: str) -> dict[str, Any]:
    """Read a settings argument given either as inline JSON or as a path to a JSON file."""
    text = Path(value).read_text() if not value.lstrip().startswith("{") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON settings ({err}); pass a JSON object or a .json file") from err

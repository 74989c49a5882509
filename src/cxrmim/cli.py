"""Small helpers every stage script uses: logging setup and a friendly top-level error handler."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CONFIGURED = False  # setup_logging ran in this process


class LogFile(logging.FileHandler):
    """The rule's log file; when it cannot be written (a full disk) it says so once on stderr and stops trying.

    The stderr handler comes first, so every message has reached the user before this one fails, and the failure
    is one line instead of logging's traceback, which would hide the real error under a second one.
    """

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record, unless an earlier write failed."""
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Note once on stderr that the log file is lost, why, and that stderr has every message."""
        self.failed = True
        _note_log_lost(self.baseFilename, sys.exc_info()[1])


def _note_log_lost(log_file: str | Path, err: BaseException | None) -> None:
    """One stderr line: the log file cannot be written, why, and where the messages go instead."""
    reason = getattr(err, "strerror", None) or err
    sys.stderr.write(f"cxrmim: cannot write the log file {log_file} ({reason}); messages go to stderr only\n")


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given and writable, to the rule's log file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handlers.append(LogFile(log_file, mode="w"))
        except OSError as err:  # a full or read-only disk must not replace the stage's own error with this one
            _note_log_lost(log_file, err)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    global _CONFIGURED
    _CONFIGURED = True


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
    if _CONFIGURED:  # the stage set up its logging (its log file too, if that was writable)
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

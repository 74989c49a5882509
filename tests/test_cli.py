"""Stage scripts end every error in the rule's log: user errors as one line, anything else with its traceback."""

from __future__ import annotations

import errno
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from cxrmim.cli import LogFile, run_main, setup_logging
from cxrmim.data.cache import check_free_space

STAGE = """
import argparse
from cxrmim.cli import parse_json_arg, run_main, setup_logging


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail", choices=["user", "bug", "early", "json", "library"])
    parser.add_argument("--log")
    args = parser.parse_args()
    if args.fail == "early":  # before the stage set up its log
        {}["missing"]
    setup_logging(args.log)
    if args.fail == "json":
        parse_json_arg("{not json")
    if args.fail == "library":
        import io

        import pandas as pd

        pd.read_csv(io.StringIO(""))  # pandas' EmptyDataError is a ValueError, but no message of ours
    if args.fail == "user":
        raise ValueError("prepared/images.npy is missing; run the prepare rule first")
    raise ZeroDivisionError("division by zero in a helper")


if __name__ == "__main__":
    run_main(main)
"""


def run_stage(tmp_path: Path, fail: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run a stage script that fails in the way `fail` names; its exit status and its log file's text."""
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    log = tmp_path / "logs" / "stage.log"
    result = subprocess.run(
        [sys.executable, str(script), "--fail", fail, "--log", str(log)], capture_output=True, check=False, text=True
    )
    return result, log.read_text() if log.exists() else ""


def test_unexpected_exception_lands_in_log_with_traceback(tmp_path: Path):
    result, log = run_stage(tmp_path, "bug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in log and "ZeroDivisionError: division by zero in a helper" in log
    assert 'stage.py", line' in log  # the frame that raised, so the log alone locates the bug


def test_exception_before_logging_setup_still_reaches_the_log(tmp_path: Path):
    result, log = run_stage(tmp_path, "early")
    assert result.returncode == 1
    assert "Traceback" in log and "KeyError: 'missing'" in log


@pytest.mark.parametrize(
    "fail, message",
    [
        ("user", "prepared/images.npy is missing; run the prepare rule first"),
        ("json", "invalid JSON settings"),
    ],
)
def test_user_error_is_one_clear_line(tmp_path: Path, fail: str, message: str):
    result, log = run_stage(tmp_path, fail)
    assert result.returncode == 1
    assert message in log and "Traceback" not in log
    assert message in result.stderr


def test_value_error_raised_inside_a_library_keeps_its_traceback(tmp_path: Path):
    """A library's ValueError (an empty CSV) is a bug to locate, not a user error: the log shows where it came from."""
    result, log = run_stage(tmp_path, "library")
    assert result.returncode == 1
    assert "No columns to parse from file (raised inside a library; traceback follows)" in log
    assert "Traceback" in log and 'stage.py", line' in log


class FullDisk:
    """A file whose every write fails as on a full disk."""

    def write(self, text: str) -> int:
        """Fail like write(2) on a full filesystem."""
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        """Nothing buffered, nothing to fail."""

    def close(self) -> None:
        """Nothing to close."""


@pytest.fixture
def root_logging():
    """Restore the root logger's handlers after a test that sets up logging in this process."""
    root = logging.getLogger()
    saved = root.handlers[:]
    yield
    root.handlers[:] = saved


@pytest.mark.parametrize("where", ["write", "open"])
def test_full_disk_under_the_log_still_shows_the_error_once(tmp_path, capsys, monkeypatch, root_logging, where):
    """The stage's error reaches stderr (which Snakemake shows) once, with one line about the log, no traceback."""
    log = tmp_path / "logs" / "prepare.log"
    if where == "open":
        monkeypatch.setattr(logging.FileHandler, "_open", lambda self: FullDisk().write(""))

    def main() -> None:
        setup_logging(log)
        if where == "write":
            next(h for h in logging.getLogger().handlers if isinstance(h, LogFile)).stream = FullDisk()
        check_free_space(tmp_path / "prepared", 10**9, 1024)  # the prepare stage's own disk-full error

    with pytest.raises(SystemExit) as exit_info:
        run_main(main)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count(f"{tmp_path / 'prepared'}: not enough disk space: the prepared cache of 1000000000 images") == 1
    assert err.count(f"cannot write the log file {log} (No space left on device); messages go to stderr only") == 1
    assert "Traceback" not in err and "Logging error" not in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full (every write: ENOSPC)")
def test_stage_logging_to_a_full_device_fails_with_its_own_message(tmp_path: Path):
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    result = subprocess.run(
        [sys.executable, str(script), "--fail", "user", "--log", "/dev/full"],
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.count("prepared/images.npy is missing; run the prepare rule first") == 1
    assert "cannot write the log file /dev/full (No space left on device)" in result.stderr
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr

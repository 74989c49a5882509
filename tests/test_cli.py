"""Stage scripts end every error in the rule's log: user errors as one line, anything else with its traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

STAGE = '''
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
'''


def run_stage(tmp_path: Path, fail: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run a stage script that fails in the way `fail` names; its exit status and its log file's text."""
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    log = tmp_path / "logs" / "stage.log"
    result = subprocess.run([sys.executable, str(script), "--fail", fail, "--log", str(log)],
                            capture_output=True, check=False, text=True)
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


@pytest.mark.parametrize("fail, message", [
    ("user", "prepared/images.npy is missing; run the prepare rule first"),
    ("json", "invalid JSON settings"),
])
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

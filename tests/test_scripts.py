"""Every stage script runs by hand: `--help` works and names its arguments."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help(script: Path):
    command = [sys.executable, str(script), "--help"]
    result = subprocess.run(command, capture_output=True, check=False, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--" in result.stdout


def test_bad_settings_json_is_a_clear_error(tmp_path: Path):
    script = next(p for p in SCRIPTS if p.name == "split.py")
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--manifest",
            str(tmp_path / "m.csv"),
            "--settings",
            "{oops",
            "--out",
            str(tmp_path / "s.csv"),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "invalid JSON settings" in result.stderr

"""The workflow passes Snakemake's linter and snakefmt's check (what .ci/run runs before the tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A console script of this venv, or skip when the extra that installs it is missing."""
    exe = shutil.which(name, path=str(BIN) + os.pathsep + os.environ["PATH"])
    if exe is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[lint]')")
    return exe


def test_snakemake_lint_is_clean():
    result = subprocess.run([tool("snakemake"), "--lint"], check=False, cwd=REPO, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition" in output, output[-4000:]


def test_snakefmt_check_passes():
    result = subprocess.run([tool("snakefmt"), "--check", "."], check=False, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

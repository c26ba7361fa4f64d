"""The pinned SAM CLI for the `sam`-marked tests: its own venv (``.venv-sam``, made by `make sam-cli`, which
`make lint` runs), run with a clean environment (no AWS settings of the caller's, telemetry off)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAM_BIN = ROOT / ".venv-sam" / "bin"


def run_sam(program: str, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``program`` (``sam``, or ``python`` for the SAM venv's interpreter) from the repo root. Fails the test
    with the way to get the CLI when the venv is missing (never a skip)."""
    executable = SAM_BIN / program
    if not executable.exists():
        pytest.fail(f"{executable} is missing: run `make sam-cli` (make lint does)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ROOT), "SAM_CLI_TELEMETRY": "0"}
    return subprocess.run(
        [str(executable), *args], capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT, check=False
    )

"""The Lambda artifact's aarch64 code run here under qemu (``make arm64-check``, scripts/arm64_check.py).

Marked ``arm64``: deselected by ``make unit``. Needs ``make build`` first; the first run downloads ~86 MB
(qemu-user-static, trixie's python3.13) into the cache (docs/local-development.md). The three tests took 2 min 35 s
with an empty cache (download + the stdlib byte-compiled under emulation) and 53 s warm, on 2 shared cores.
Run: ``.venv/bin/python -m pytest tests/unit/test_arm64_artifact.py -m arm64 -q``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.arm64

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / ".aws-sam" / "build" / "RelayFunction"
EVENTS = "200"


def _driver(*args: str) -> subprocess.CompletedProcess[str]:
    assert (ARTIFACT / "capi_relay").is_dir(), f"no artifact in {ARTIFACT}: run `make build` first"
    command = [sys.executable, "-m", "scripts.arm64_check", "--events", EVENTS, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)


def test_the_artifacts_aarch64_code_prepares_the_corpus_byte_identically_to_src_on_this_machine() -> None:
    done = _driver()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "arm64-check: OK" in done.stdout
    assert "emulated  aarch64 CPython 3.13." in done.stdout
    assert f"orjson    {ARTIFACT}/orjson/orjson.cpython-313-aarch64-linux-gnu.so" in done.stdout
    assert "byte-identical" in done.stdout


def _artifact_copy(tmp_path: Path) -> Path:
    """The artifact with capi_relay and orjson copied (checked to load from it), the rest linked."""
    copy = tmp_path / "RelayFunction"
    copy.mkdir()
    for entry in ARTIFACT.iterdir():
        if entry.name in ("capi_relay", "orjson"):
            shutil.copytree(entry, copy / entry.name, symlinks=True)
        else:
            (copy / entry.name).symlink_to(entry)
    return copy


def test_an_artifact_whose_code_prepares_one_event_differently_fails_the_comparison(tmp_path: Path) -> None:
    # What a compiled core could get wrong: the NFC after a field's rule (lower-casing can decompose), here NFD.
    copy = _artifact_copy(tmp_path)
    normalize = copy / "capi_relay" / "prepare" / "normalize.py"
    source = normalize.read_text()
    mutated = source.replace('unicodedata.normalize("NFC", normalized)', 'unicodedata.normalize("NFD", normalized)')
    assert mutated != source
    normalize.write_text(mutated)
    shutil.rmtree(normalize.parent / "__pycache__")  # the artifact ships unchecked-hash .pyc: drop the stale ones
    done = _driver("--artifact", str(copy))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "arm64-check: FAILED: the outputs differ" in done.stdout


def test_a_module_expected_compiled_that_loads_as_python_source_fails() -> None:
    done = _driver("--expect-compiled", "capi_relay.prepare.normalize")
    assert done.returncode == 1, done.stdout + done.stderr
    output = done.stdout + done.stderr  # the driver passes the checker's messages on
    assert "--expect-compiled capi_relay.prepare.normalize: loaded from" in output
    assert "not a aarch64 .so" in output

"""`make help` lists every target of the Makefile, one line each: it is generated from the ``## `` comment on
each target's line, so a target without one is caught here rather than silently missing from the help."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def makefile_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return re.findall(r"(?m)^([a-z][a-z0-9-]*):(?!=)", text)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target_once_with_a_description() -> None:
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60).stdout  # fmt: skip
    listed = re.findall(r"(?m)^  make (\S+) +(\S.*)$", out)
    targets = makefile_targets()
    assert len(targets) >= 15
    assert sorted(name for name, _ in listed) == sorted(targets)
    phony = re.search(r"(?m)^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(encoding="utf-8"))
    assert phony is not None
    assert sorted(phony.group(1).split()) == sorted(targets)


def test_the_readme_names_only_targets_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", readme))
    assert named <= set(makefile_targets()), named - set(makefile_targets())

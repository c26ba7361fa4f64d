"""Release hygiene: one version everywhere, the files a company looks for, a linted CI workflow."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs

import capi_relay
from capi_relay.deliver import client as graph

ROOT = Path(__file__).resolve().parents[2]


def test_one_version_package_metadata_and_user_agent() -> None:
    # pyproject reads the version from capi_relay.__version__ (dynamic); the installed metadata and the
    # User-Agent sent to Meta must carry the same string.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "capi_relay.__version__"}
    assert metadata.version("capi-relay") == capi_relay.__version__
    assert f"capi-relay/{capi_relay.__version__}" == graph.USER_AGENT


def test_changelog_has_this_release_and_the_previous_one() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, flags=re.MULTILINE)
    versions = [v for v, _ in releases]
    assert versions[0] == capi_relay.__version__
    assert "0.1.0" in versions


def test_license_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert declared == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "capi-relay contributors" in text


def test_security_policy_says_how_to_report_and_what_is_kept() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    assert "## Reporting a vulnerability" in text
    assert "## What the relay stores and logs" in text


def test_ci_workflow_runs_what_ci_run_runs() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert set(workflow[True]) == {"push", "pull_request"}  # YAML 1.1 reads the key `on` as True
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(step.get("run") == "bash .ci/run" for step in steps)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for step in steps:
        if "uses" in step:  # every action pinned to a full commit
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    python = next(s for s in steps if s.get("id") == "python")  # the project's 3.13 (kit-python: the kit's 3.10)
    assert python["with"]["cache-dependency-path"] == "requirements-dev.lock"


def test_dependabot_watches_pip_and_actions() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert {u["package-ecosystem"] for u in config["updates"]} == {"pip", "github-actions"}


def test_actionlint_accepts_the_workflows() -> None:
    actionlint = shutil.which("actionlint") or str(ROOT / ".venv" / "bin" / "actionlint")
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    result = subprocess.run([actionlint, *workflows], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

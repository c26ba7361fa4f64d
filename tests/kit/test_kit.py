"""The producer kit as a producer installs it: ``pip install .`` on the oldest Python the machine has (3.10
where available; ``make kit-test`` creates .venv-kit and runs this file there with ``-c /dev/null``, so the
installed package is tested, not ``src/``). Only the standard library and pytest: no AWS, no network, no SAM
CLI. Every command runs as a child process with a minimal environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NO_AWS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def capi_relay(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capi_relay", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), **NO_AWS, **(env or {})},
        cwd=ROOT / "tests",  # not src/: the installed package is imported
        timeout=120,
        check=False,
    )


def test_the_kit_runs_on_this_interpreter_from_its_install() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import capi_relay, sys; print(capi_relay.__file__); print(sys.version_info[:2])"],
        capture_output=True, text=True, cwd=ROOT / "tests", check=True,
    )  # fmt: skip
    location, version = out.stdout.splitlines()
    print(f"capi_relay from {location} on Python {version}")
    if os.environ.get("CAPI_RELAY_KIT_TEST") == "1":  # make kit-test: the installed copy, not src/
        assert "site-packages" in location


def test_check_explain_shows_values_conversions_and_warnings() -> None:
    result = capi_relay("check", "--explain", str(EXAMPLES / "messy-event.json"))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    [explained] = doc["explain"]
    db = next(v for v in explained["user_data"] if v["field"] == "db")
    assert db["hashed"] == ["19900503"]  # MDY by default ...
    assert {"index": 0, "field": "db", "warning": "date_read_by_convention", "date_order": "MDY",
            "decided_by": "DATE_ORDER"} in doc["warnings"]  # fmt: skip
    assert {"index": 0, "field": "custom_data.value", "note": "converted", "from": "59.90", "to": 59.9} in doc[
        "adjusted"
    ]
    flagged = capi_relay("check", "--explain", "--date-order", "DMY", str(EXAMPLES / "messy-event.json"))
    db = next(v for v in json.loads(flagged.stdout)["explain"][0]["user_data"] if v["field"] == "db")
    assert db["hashed"] == ["19900305"]  # ... and day first with --date-order DMY


def test_check_lists_every_reason_of_a_rejected_event() -> None:
    result = capi_relay("check", "-", stdin=json.dumps({"event_name": "Purchase", "action_source": "website"}))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    reasons = [line.split(": ")[2] for line in lines if "rejected" in line]
    assert reasons == ["missing_user_data", "website_missing_event_source_url", "website_missing_user_agent",
                       "missing_value", "missing_currency"]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--queue-url", "http://127.0.0.1:9/000000000000/q"], {}, "no AWS region"),
        (["--queue-url", "https://sqs.eu-west-1.amazonaws.com/000000000000/q"], {}, "no AWS credentials"),
        (
            ["--queue-url", "http://127.0.0.1:9/000000000000/q", "--region", "us-east-1"],
            {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"},
            "EndpointConnectionError",
        ),
    ],
)
def test_send_that_cannot_send_prints_one_line_and_exits_3(args: list[str], env: dict[str, str], message: str) -> None:
    event = {"event_name": "Lead", "action_source": "system_generated", "user_data": {"em": "a@example.com"}}
    result = capi_relay("send", *args, "-", stdin=json.dumps(event), env=env)
    assert result.returncode == 3
    [line] = result.stderr.splitlines()
    assert line.startswith("capi-relay: ")
    assert message in line
    assert "Traceback" not in result.stderr


def test_help_is_plain_text() -> None:
    for args in ([], ["check"], ["send"], ["dlq"]):
        result = capi_relay(*args, "--help")
        assert result.returncode == 0
        assert "``" not in result.stdout
        assert "`" not in result.stdout.replace("`aws configure`", "")

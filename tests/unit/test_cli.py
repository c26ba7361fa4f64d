"""`capi-relay check FILE|-`: exit codes 0/1/2, stdout is the JSON document alone, stdin ``-``, and it runs
with an empty environment (no AWS variables, no secret, no network)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from capi_relay.tools import cli
from tests.factories import NOW, make_event

UNHASHED = ("John_Smith@Gmail.com", "(650) 555-1212", "Menlo Park", "John", "Smith")
DOCUMENT_KEYS = {"pixel_id", "test_event_code", "data", "rejected", "dropped", "adjusted", "warnings"}


def run_main(argv: list[str], stdin_text: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(argv, io.StringIO(stdin_text), out)
    return code, out.getvalue()


def run_process(args: list[str], stdin_text: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m capi_relay`` in a child process with an EMPTY environment."""
    return subprocess.run(
        [sys.executable, "-m", "capi_relay", *args],
        input=stdin_text,
        capture_output=True,
        text=True,
        env={},
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_check_returns_the_events_as_they_would_be_posted_and_exit_0() -> None:
    # Given a message body with one valid event
    document, code = cli.check(json.dumps(make_event()), NOW)
    # Then it is accepted, hashed, and nothing is rejected
    assert code == 0
    assert document["rejected"] == []
    [event] = document["data"]
    assert event["user_data"]["em"] == "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    assert event["event_time"] == NOW - 60


def test_check_reports_rejections_by_index_and_reason_and_exit_1() -> None:
    body = json.dumps({"data": [make_event(), make_event(event_time=NOW - 30 * 86_400), make_event(event_name="")]})
    document, code = cli.check(body, NOW)
    assert code == 1
    assert len(document["data"]) == 1
    assert document["rejected"] == [
        {"index": 1, "reason": "event_too_old"},
        {"index": 2, "reason": "missing_event_name"},
    ]


def test_check_defaults_a_missing_event_time_to_now_like_the_relay() -> None:
    document, code = cli.check(json.dumps(make_event(event_time=...)), NOW)
    assert code == 0
    assert document["data"][0]["event_time"] == NOW


@pytest.mark.parametrize(
    "wrap",
    [
        lambda e: {"data": [e], "pixel_id": "123"},
        lambda e: {"detail-type": "capi", "source": "shop", "detail": e},
        lambda e: {"Type": "Notification", "TopicArn": "arn:aws:sns:eu-west-1:1:t", "Message": json.dumps(e)},
    ],
    ids=["data", "eventbridge", "sns"],
)
def test_check_accepts_every_envelope_the_relay_accepts(wrap: Any) -> None:
    document, code = cli.check(json.dumps(wrap(make_event())), NOW)
    assert code == 0
    assert len(document["data"]) == 1


def test_main_reads_stdin_with_dash_and_prints_json_alone(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_main(["check", "-"], json.dumps(make_event(event_time=None)))
    assert code == 0
    document = json.loads(out)  # stdout parses as one JSON document: nothing else was printed
    assert set(document) == DOCUMENT_KEYS
    assert capsys.readouterr().out == ""


def test_main_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"data": [make_event(event_time=None), make_event(action_source="nope")]}))
    code, out = run_main(["check", str(path)])
    assert code == 1
    assert json.loads(out)["rejected"] == [{"index": 1, "reason": "invalid_action_source"}]


@pytest.mark.parametrize("body", ["", "not json", "[1, 2", '"a string"', "42", '{"no": "event"}'])
def test_unreadable_input_exits_2_with_nothing_on_stdout(body: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_main(["check", "-"], body)
    assert code == 2
    assert out == ""
    assert "capi-relay:" in capsys.readouterr().err


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    code, out = run_main(["check", str(tmp_path / "missing.json")])
    assert (code, out) == (2, "")


def test_a_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"event_name": "Purchase \xe9"}')
    assert run_main(["check", str(path)]) == (2, "")


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as caught:
        run_main([])
    assert caught.value.code == 2


def test_rejection_details_go_to_stderr_never_raw_pii(capsys: pytest.CaptureFixture[str]) -> None:
    event = make_event(event_time=int(time.time()) + 3600)  # main() uses the real clock
    code, out = run_main(["check", "-"], json.dumps(event))
    err = capsys.readouterr().err
    assert code == 1
    assert "event 0 rejected: event_in_future" in err
    for value in UNHASHED:
        assert value not in err
        assert value not in out


def test_stdout_never_carries_raw_pii() -> None:
    code, out = run_main(["check", "-"], json.dumps(make_event(event_time=None)))
    assert code == 0
    for value in UNHASHED:
        assert value not in out
        assert value.lower() not in out


# ------------------------------------------------------------------ a real child process, empty environment
@pytest.mark.parametrize(
    ("body", "expected_code"),
    [
        (json.dumps(make_event(event_time=None)), 0),
        (json.dumps({"data": [make_event(event_time=None), make_event(user_data=...)]}), 1),
        ("{oops", 2),
    ],
)
def test_python_m_capi_relay_check_with_an_empty_environment(body: str, expected_code: int, tmp_path: Path) -> None:
    # Given no environment at all (no AWS_*, no PIXEL_ID, no secret id) and the body on stdin
    proc = run_process(["check", "-"], body, cwd=tmp_path)
    # Then the exit code follows the contract and stdout is the JSON document alone (or empty on exit 2)
    assert proc.returncode == expected_code, proc.stderr
    if expected_code == 2:
        assert proc.stdout == ""
        assert "capi-relay:" in proc.stderr
    else:
        document = json.loads(proc.stdout)
        assert set(document) == DOCUMENT_KEYS
        assert len(document["rejected"]) == expected_code


def test_the_cli_imports_no_aws_or_http_library(tmp_path: Path) -> None:
    # The check path must not need boto3/Powertools/urllib3 (cold start, and no AWS setup for users).
    code = (
        "import sys, io, json; from capi_relay.tools import cli; "
        "cli.main(['check', '-'], io.StringIO(sys.argv[1]), io.StringIO()); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'boto3', 'botocore', 'aws_lambda_powertools', 'urllib3'})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(make_event())],
        capture_output=True,
        text=True,
        env={},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_check_reads_no_more_than_one_message_can_hold() -> None:
    # Given stdin far over the 6 MiB a message body may hold
    from capi_relay.ingest.envelope import MAX_MESSAGE_BYTES

    stdin = io.StringIO('{"event_name": "' + "a" * (2 * MAX_MESSAGE_BYTES) + '"}')
    out = io.StringIO()
    # When checked, Then it is refused as too large having read only just over the cap
    assert cli.main(["check", "-"], stdin=stdin, stdout=out) == 2
    assert stdin.tell() <= MAX_MESSAGE_BYTES + 1

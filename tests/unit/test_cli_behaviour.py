"""Issue 19: a CLI that behaves. ``send`` fails fast and in one line (exit 3) when it cannot send; a closed
pipe ends quietly; ``check --explain`` shows values before hashing, every rejection reason, ambiguity
warnings; ``--date-order`` / ``--phone-region``; event-level conversions under ``adjusted``; plain help."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from capi_relay.settings import NormalizationSettings
from capi_relay.tools import cli
from capi_relay.tools.explain import all_rejections, ambiguity_warnings, explain_event
from capi_relay.tools.producer import Message, Sender, endpoint_from_queue_url, region_from_queue_url
from tests.factories import NOW, make_event

ROOT = Path(__file__).resolve().parents[2]
NO_AWS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
LEAD = {"event_name": "Lead", "action_source": "system_generated", "user_data": {"em": "a@example.com"}}


def run(args: list[str], stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capi_relay", *args], input=stdin, capture_output=True, text=True, cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT / "src"), **NO_AWS, **(env or {})},
        timeout=120, check=False,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ send
@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/capi-relay-prod-events", "eu-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "cn-north-1"),
        ("https://ap-south-1.queue.amazonaws.com/123456789012/q", "ap-south-1"),
        ("https://sqs.us-east-2.api.aws/123456789012/q", "us-east-2"),
        ("http://127.0.0.1:5000/123456789012/q", None),
        ("https://sqs.amazonaws.com/123456789012/q", None),
        ("not a url", None),
    ],
)
def test_the_region_comes_from_an_aws_queue_url(url: str, region: str | None) -> None:
    assert region_from_queue_url(url) == region


def test_a_local_queue_url_is_its_own_endpoint_and_an_aws_one_is_not() -> None:
    assert endpoint_from_queue_url("http://127.0.0.1:5000/123456789012/q") == "http://127.0.0.1:5000"
    assert endpoint_from_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/q") is None


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        # no region anywhere: 60 lines of NoRegionError before; now one line
        (["--queue-url", "http://127.0.0.1:9/123456789012/q"], {}, r"cannot send: no AWS region: pass --region"),
        # no credentials: botocore retried 4 times before; now at once
        (["--queue-url", "https://sqs.eu-west-1.amazonaws.com/123456789012/q"], {},
         r"cannot send: no AWS credentials found"),
        # a profile that does not exist
        (["--queue-url", "https://sqs.eu-west-1.amazonaws.com/123456789012/q"], {"AWS_PROFILE": "nope"},
         r"cannot send: ProfileNotFound: "),
        # nothing listens there: botocore's bounded attempts, then one line
        (["--queue-url", "http://127.0.0.1:9/123456789012/q", "--region", "us-east-1"],
         {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"},
         r"could not send 1 events: EndpointConnectionError: .*127\.0\.0\.1:9"),
        (["--queue-url", "http://127.0.0.1:9/123456789012/q", "--endpoint-url", "http://127.0.0.1:9",
          "--region", "us-east-1"], {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"},
         r"could not send 1 events: EndpointConnectionError"),
    ],
)  # fmt: skip
def test_send_that_cannot_send_exits_3_with_one_line(args: list[str], env: dict[str, str], expected: str) -> None:
    result = run(["send", *args, "-"], json.dumps(LEAD), env)
    assert result.returncode == 3, result.stderr
    [line] = result.stderr.splitlines()
    assert re.search(r"^capi-relay: " + expected, line), line
    assert "Traceback" not in result.stderr


class _Refusing:
    """An SQS client whose every call raises one exception (botocore's shape: ``response["Error"]["Code"]``)."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.calls = 0

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        self.calls += 1
        error = Exception(f"An error occurred ({self.code}) when calling the SendMessageBatch operation: no")
        error.response = {"Error": {"Code": self.code}}  # type: ignore[attr-defined]
        raise error


def _calls(n: int) -> list[list[Message]]:
    return [[Message(body="{}", indexes=(i,), size=2)] for i in range(n)]


def test_an_error_no_retry_cures_stops_sending_at_once() -> None:
    client = _Refusing("AWS.SimpleQueueService.NonExistentQueue")
    report = Sender(client, "https://sqs.eu-west-1.amazonaws.com/1/q", sleep=lambda s: None).send(_calls(3))
    assert client.calls == 1  # not 5 attempts, and not the two later calls
    assert [code for _, code in report.failed] == ["AWS.SimpleQueueService.NonExistentQueue", "not_attempted",
                                                  "not_attempted"]  # fmt: skip
    assert report.error is not None
    assert report.error.startswith("AWS.SimpleQueueService.NonExistentQueue: An error occurred")


def test_a_transient_error_is_still_retried() -> None:
    client = _Refusing("ServiceUnavailable")
    report = Sender(client, "https://sqs.eu-west-1.amazonaws.com/1/q", attempts=3, sleep=lambda s: None).send(_calls(1))
    assert client.calls == 3
    assert [code for _, code in report.failed] == ["ServiceUnavailable"]


# --------------------------------------------------------------------------------------------- pipes
def test_a_closed_pipe_ends_check_quietly() -> None:
    now = int(time.time())  # the child uses the real clock
    body = json.dumps({"data": [make_event(now, event_id=f"e-{i}") for i in range(400)]})  # ~1 MB of output
    proc = subprocess.Popen(
        [sys.executable, "-m", "capi_relay", "check", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=ROOT, env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdin.write(body.encode())
    proc.stdin.close()
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    code = proc.wait(timeout=120)
    stderr = proc.stderr.read().decode()
    assert stderr == ""
    assert code == 141


# ------------------------------------------------------------------------------------------------ help
@pytest.mark.parametrize("command", [[], ["check"], ["send"], ["dlq"]])
def test_help_is_plain_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command, "--help"], io.StringIO(), io.StringIO())
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage: capi-relay" in text
    assert "``" not in text
    assert ":func:" not in text


# --------------------------------------------------------------------------------------------- explain
SETTINGS = NormalizationSettings()


def test_every_rejection_reason_of_an_event_at_once() -> None:
    event = {"event_name": "Purchase", "action_source": "website", "event_time": NOW - 30 * 86_400,
             "user_data": {"ge": "f", "fn": "ann"}, "custom_data": {"value": "lots", "currency": "XXY"}}  # fmt: skip
    reasons = [r.reason for r in all_rejections(event, SETTINGS, NOW)]
    assert reasons == ["event_too_old", "website_missing_event_source_url", "website_missing_user_agent",
                       "insufficient_customer_information", "invalid_value", "invalid_currency"]  # fmt: skip
    assert event["event_time"] == NOW - 30 * 86_400  # the input is not changed


def test_a_valid_event_has_no_rejection_and_a_non_object_has_one() -> None:
    assert all_rejections(make_event(), SETTINGS, NOW) == []
    assert [r.reason for r in all_rejections([1], SETTINGS, NOW)] == ["not_an_object"]


def test_check_prints_every_reason_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    body = json.dumps({"data": [make_event(int(time.time())), {"event_name": "Purchase", "action_source": "website"}]})
    code = cli.main(["check", "-"], io.StringIO(body), io.StringIO())
    assert code == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "missing_user_data", "website_missing_event_source_url", "website_missing_user_agent", "missing_value",
        "missing_currency",
    ]  # fmt: skip
    assert all(line.startswith("capi-relay: event 1 rejected: ") for line in lines)


def test_explain_shows_each_value_before_hashing_and_why_it_changed() -> None:
    raw = make_event(user_data={"em": " John@Example.COM ", "ph": "+44 20 7946 0958", "ct": "São Paulo",
                                "country": "Brasil", "external_id": "a" * 64, "db": "1990-12-31",
                                "client_user_agent": "Mozilla/5.0"})  # fmt: skip
    doc = explain_event(0, raw, SETTINGS, NOW)
    by_field = {v["field"]: v for v in doc["user_data"]}
    assert by_field["em"]["hashed"] == ["john@example.com"]
    assert by_field["em"]["why"] == ["trimmed", "lower-cased"]
    assert by_field["em"]["sent"] == ["855f96e983f1f8e8be944692b6f719fd54329826cb62e98015efee8e2e071dd4"]
    assert by_field["ph"]["hashed"] == ["442079460958"]
    assert by_field["ph"]["why"] == ["reduced to its digits"]
    assert by_field["ct"]["hashed"][0] == "sãopaulo"
    assert "also sent as 1 variant(s) that Meta's other normalizers compute" in by_field["ct"]["why"]
    assert by_field["country"]["hashed"] == ["br"]
    assert by_field["external_id"]["sent"] == ["a" * 64]
    assert by_field["db"]["hashed"] == ["19901231"]
    assert doc["rejected"] == []
    assert doc["phone_region"] == "BR"


def test_explain_shows_why_a_value_was_dropped() -> None:
    raw = make_event(user_data={"em": "not-an-email", "ph": "0" * 32, "client_user_agent": "Mozilla/5.0",
                                "external_id": "x"})  # fmt: skip
    by_field = {v["field"]: v for v in explain_event(0, raw, SETTINGS, NOW)["user_data"]}
    assert by_field["em"]["dropped"] == "invalid_email"
    assert by_field["ph"]["dropped"] == "md5_hash"


def test_an_ambiguous_date_is_read_by_the_date_order_and_warned_about() -> None:
    raw = make_event(user_data={"em": "a@example.com", "db": "05/03/1990"})  # no country: DATE_ORDER decides
    assert ambiguity_warnings(raw, SETTINGS, NOW) == [
        {"field": "db", "warning": "date_read_by_convention", "date_order": "MDY", "decided_by": "DATE_ORDER"}
    ]
    [db] = [v for v in explain_event(0, raw, SETTINGS, NOW)["user_data"] if v["field"] == "db"]
    assert db["hashed"] == ["19900503"]
    assert "ambiguous: read month first by the date order MDY; --date-order DMY reads 19900305" in db["why"]
    german = make_event(user_data={"em": "a@example.com", "db": "05.03.1990", "country": "de"})
    assert ambiguity_warnings(german, SETTINGS, NOW) == [
        {"field": "db", "warning": "date_read_by_convention", "date_order": "DMY", "decided_by": "country"}
    ]
    [db] = [v for v in explain_event(0, german, SETTINGS, NOW)["user_data"] if v["field"] == "db"]
    assert db["hashed"] == ["19900305"]
    assert (
        "ambiguous: read day first as the event's country de writes dates (DMY); the other order reads 19900503"
        in db["why"]
    )
    unambiguous = make_event(user_data={"em": "a@example.com", "db": "31/12/1990", "country": "US"})
    assert ambiguity_warnings(unambiguous, SETTINGS, NOW) == []


def test_a_national_phone_without_country_is_warned_about_and_one_with_country_is_not() -> None:
    without = make_event(user_data={"em": "a@example.com", "ph": "030 1234567"})
    assert ambiguity_warnings(without, SETTINGS, NOW) == [
        {"field": "ph", "warning": "phone_region_assumed", "region": "US"}
    ]
    assert ambiguity_warnings(make_event(user_data={"ph": "030 1234567", "country": "DE"}), SETTINGS, NOW) == []
    assert ambiguity_warnings(make_event(user_data={"ph": "+49 30 1234567"}), SETTINGS, NOW) == []


def _check(args: list[str], body: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = cli.main(["check", *args, "-"], io.StringIO(body), out)
    capsys.readouterr()
    return code, json.loads(out.getvalue())


def test_date_order_and_phone_region_flags_override_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATE_ORDER", "MDY")
    body = json.dumps(
        make_event(
            int(time.time()),
            user_data={"em": "a@example.com", "db": "05/03/1990", "ph": "030 1234567", "client_user_agent": "UA"},
        )
    )
    _, default = _check(["--explain"], body, capsys)
    _, flagged = _check(["--explain", "--date-order", "dmy", "--phone-region", "de"], body, capsys)
    values = {v["field"]: v["hashed"] for v in default["explain"][0]["user_data"]}
    flagged_values = {v["field"]: v["hashed"] for v in flagged["explain"][0]["user_data"]}
    assert values["db"] == ["19900503"]
    assert flagged_values["db"] == ["19900305"]
    assert flagged_values["ph"] == ["49301234567"]
    assert flagged["data"][0]["user_data"]["db"] != default["data"][0]["user_data"]["db"]  # the hash POSTed too
    assert {"index": 0, "field": "ph", "warning": "phone_region_assumed", "region": "DE"} in flagged["warnings"]


def test_a_bad_flag_value_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check", "--phone-region", "germany", "-"], io.StringIO("{}"), io.StringIO())
    assert code == 2
    assert capsys.readouterr().err.startswith("capi-relay: configuration error: DEFAULT_PHONE_REGION")


def test_every_event_level_conversion_is_under_adjusted(capsys: pytest.CaptureFixture[str]) -> None:
    body = json.dumps(make_event(int(time.time()), event_name=" Purchase ", event_id=1001,
                                 custom_data={"value": "59.90", "currency": "USD"}))  # fmt: skip
    code, doc = _check([], body, capsys)
    assert code == 0
    converted = [a for a in doc["adjusted"] if a["note"] == "converted"]
    assert converted == [
        {"index": 0, "field": "event_name", "note": "converted", "from": " Purchase ", "to": "Purchase"},
        {"index": 0, "field": "event_id", "note": "converted", "from": 1001, "to": "1001"},
        {"index": 0, "field": "custom_data.value", "note": "converted", "from": "59.90", "to": 59.9},
        {"index": 0, "field": "custom_data.currency", "note": "converted", "from": "USD", "to": "usd"},
    ]


def test_explain_output_stays_out_of_the_check_document_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    _, doc = _check([], json.dumps(make_event()), capsys)
    assert "explain" not in doc

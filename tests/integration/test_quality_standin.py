"""The Dataset Quality API over real HTTP: the stand-in checked against Meta's documented examples, and the
reader (GraphClient.get_json, bounded) against the stand-in: healthy, permission missing, unknown dataset,
throttled, slow, a field Meta dropped; then the scheduled handler end to end with the secret in moto."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from capi_relay.aws.secrets import Credentials
from capi_relay.deliver.client import GraphClient
from capi_relay.quality import decide
from capi_relay.quality.config import QualityConfig
from capi_relay.quality.dataset_quality import FULL_FIELDS, MINIMAL_FIELDS
from capi_relay.quality.reader import QualityReader, StaticTokens
from local.graph_standin import GraphStandIn
from local.quality_standin import documented_dataset
from local.stack import Resources

pytestmark = pytest.mark.integration

EXAMPLES = json.loads((Path(__file__).resolve().parents[1] / "data" / "dataset_quality_examples.json").read_text())
PIXEL = "100000000000001"
PURCHASE = {
    "event_name": "Purchase",
    "event_match_quality": {
        "composite_score": 8.1,
        "match_key_feedback": [{"identifier": "email", "coverage": {"percentage": 96.5}},
                               {"identifier": "phone", "coverage": {"percentage": 12.0}},
                               {"identifier": "ip_address", "coverage": {"percentage": 99.9}}],
        "diagnostics": [{"name": "Send phone numbers with a country code", "description": "d", "solution": "s",
                         "percentage": 88.0, "affected_event_count": 880, "total_event_count": 1000}],
    },
    "event_coverage": {"percentage": 81.0, "goal_percentage": 75, "description": "x"},
    "dedupe_key_feedback": [{"dedupe_key": "event_id", "browser_events_with_dedupe_key": {"percentage": 100},
                             "server_events_with_dedupe_key": {"percentage": 100},
                             "overall_browser_coverage_from_dedupe_key": {"percentage": 77.0}}],
    "data_freshness": {"upload_frequency": "real_time", "description": "x"},
}  # fmt: skip


def get(standin: GraphStandIn, path: str, params: dict[str, str], token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{standin.url}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def shape(value: Any) -> Any:
    """The nesting and key names of a JSON value (lists by their first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if not isinstance(value, int | float) else "number"


# ------------------------------------------------------------------- the stand-in vs Meta's examples
@pytest.mark.parametrize("item", EXAMPLES["examples"], ids=lambda e: e["name"])
def test_the_standin_answers_each_documented_request_with_the_documented_shape(
    standin: GraphStandIn, token: str, item: dict[str, Any]
) -> None:
    # Given Meta's documented request (its fields parameter, the token as the curl example's query parameter)
    status, body = get(standin, "/v26.0/dataset_quality",
                       {"dataset_id": PIXEL, "fields": item["fields"], "access_token": token}, None)  # fmt: skip
    # Then the answer has exactly the documented nesting, and each documented event comes back as documented
    assert status == 200, body
    assert set(body) == {"web"}
    answered = {entry["event_name"]: entry for entry in body["web"]}
    for documented in item["response"]["web"]:
        mine = answered[documented["event_name"]]
        assert shape(mine) == shape(documented), item["name"]
        assert mine == documented, item["name"]
    # and no event carries a field that was not asked for
    asked = {name.split("{")[0] for name in item["fields"][4:-1].split(",") if name}
    for entry in body["web"]:
        assert set(entry) <= asked | {"event_name"}, entry


def test_the_standin_refuses_what_meta_documents_it_refuses(standin: GraphStandIn, token: str) -> None:
    standin.state.pixels = {PIXEL}
    status, body = get(standin, "/v26.0/dataset_quality", {"dataset_id": "999", "fields": MINIMAL_FIELDS}, token)
    assert (status, body["error"]["code"]) == (400, 2044055)  # "The dataset_id that was inputted doesn't exist."
    standin.state.quality_denied_tokens = {token}
    status, body = get(standin, "/v26.0/dataset_quality", {"dataset_id": PIXEL}, token)
    assert (status, body["error"]["code"]) == (400, 10)
    standin.state.quality_denied_tokens = set()
    assert get(standin, "/v26.0/dataset_quality", {"dataset_id": PIXEL}, None)[1]["error"]["code"] == 104
    assert get(standin, "/v26.0/dataset_quality", {"dataset_id": PIXEL}, "nope")[1]["error"]["code"] == 190
    assert get(standin, "/v26.0/dataset_quality", {}, token)[1]["error"]["code"] == 100
    assert get(standin, f"/v26.0/{PIXEL}/dataset_quality", {}, token)[1]["error"]["code"] == 2500
    assert get(standin, "/v20.0/dataset_quality", {"dataset_id": PIXEL}, token)[1]["error"]["code"] == 2635
    status, body = get(standin, "/v26.0/dataset_quality", {"dataset_id": PIXEL, "fields": "web{emq}"}, token)
    assert (status, body["error"]["code"]) == (400, 100)
    assert "nonexisting field (emq)" in body["error"]["message"]


def test_without_fields_the_standin_answers_the_default_fields(standin: GraphStandIn, token: str) -> None:
    status, body = get(standin, "/v26.0/dataset_quality", {"dataset_id": PIXEL}, token)
    assert status == 200
    assert all(set(e) <= {"event_name", "event_match_quality"} for e in body["web"])
    assert len(body["web"]) == len(documented_dataset())


# --------------------------------------------------------------------------- the reader over HTTP
def reader_for(standin: GraphStandIn, token: str, *, read_timeout_s: float = 2.0, **kw: Any) -> QualityReader:
    pixels = kw.pop("pixel_ids", (PIXEL,))
    cfg = QualityConfig(access_token_secret_id=None, pixel_ids=pixels, graph_api_url=standin.url,
                        read_timeout_s=read_timeout_s, deadline_margin_s=0.5, **kw)  # fmt: skip
    client = GraphClient(standin.url, "v26.0", read_timeout_s=read_timeout_s, max_response_bytes=cfg.max_response_bytes)
    return QualityReader(client, StaticTokens(Credentials(token)), cfg)


def test_healthy_read_publishes_emq_and_key_coverage_and_sends_the_token_only_as_a_header(
    standin: GraphStandIn, token: str
) -> None:
    page_view = {"event_name": "PageView", "event_match_quality": {"composite_score": 4.0, "match_key_feedback": []}}
    standin.state.quality_datasets = {PIXEL: [PURCHASE, page_view]}
    reader = reader_for(standin, token)
    (read,) = reader.read_all(time.monotonic() + 10)
    assert read.quality is not None, read
    (purchase, _) = read.quality.events
    assert (purchase.composite_score, purchase.match_keys["phone"], purchase.dedup_rate_pct) == (8.1, 12.0, 77.0)
    plan = decide.plan(reader._config, [read])
    assert [(p.name, p.value) for p in plan.points] == [
        ("EmqComposite", 8.1), ("MatchKeyCoverage", 96.5), ("MatchKeyCoverage", 12.0), ("EventCoverage", 81.0),
        ("MatchKeysBelowFloor", 1.0)]  # fmt: skip
    (request,) = standin.requests
    assert request.method == "GET"
    assert request.token_location == "bearer"
    assert token not in request.path
    assert request.query["fields"] == [FULL_FIELDS]
    assert request.headers["User-Agent"].startswith("capi-relay/")


def test_permission_missing_is_one_request_one_reason_one_metric(standin: GraphStandIn, token: str) -> None:
    standin.state.quality_denied_tokens = {token}
    reader = reader_for(standin, token)
    (read,) = reader.read_all(time.monotonic() + 10)
    assert (read.error, read.attempts, len(standin.requests)) == ("permission_missing", 1, 1)
    plan = decide.plan(reader._config, [read])
    assert [(p.name, p.dimensions) for p in plan.points] == [("QualityReadErrors", (("reason", "permission_missing"),))]


def test_unknown_dataset(standin: GraphStandIn, token: str) -> None:
    standin.state.pixels = {PIXEL}
    (read,) = reader_for(standin, token, pixel_ids=("424242",)).read_all(time.monotonic() + 10)
    assert (read.error, read.attempts) == ("unknown_dataset", 1)
    assert "2044055" in read.detail


def test_throttled_read_is_not_retried_and_keeps_metas_estimate(standin: GraphStandIn, token: str) -> None:
    standin.add_fault(pixel_id=PIXEL, code=80004, usage_minutes=7, times=-1)
    (read,) = reader_for(standin, token).read_all(time.monotonic() + 10)
    assert (read.error, len(standin.requests)) == ("throttled", 1)
    assert read.retry_after_s == 7 * 60


def test_a_slow_meta_costs_at_most_two_capped_attempts_and_never_the_deadline(
    standin: GraphStandIn, token: str
) -> None:
    standin.add_fault(pixel_id=PIXEL, delay_ms=3000, times=-1)
    reader = reader_for(standin, token, read_timeout_s=0.5)
    started = time.monotonic()
    (read,) = reader.read_all(started + 10)
    elapsed = time.monotonic() - started
    assert read.error == "transient"
    assert read.attempts == 2
    assert elapsed < 2 * (1.0 + 0.5) + 0.5  # two attempts, each capped at connect + read
    # A short deadline: the one attempt gets only the time left, a second never starts.
    started = time.monotonic()
    (read,) = reader_for(standin, token, read_timeout_s=5.0).read_all(started + 1.5)
    assert read.error in ("transient", "deadline")
    assert time.monotonic() - started < 1.5


def test_a_body_dripped_byte_by_byte_cannot_hold_the_reader(standin: GraphStandIn, token: str) -> None:
    standin.add_fault(pixel_id=PIXEL, drip_s=0.2, times=-1)
    started = time.monotonic()
    (read,) = reader_for(standin, token, read_timeout_s=0.5).read_all(started + 10)
    assert read.error == "transient"
    assert time.monotonic() - started < 4


def test_a_field_meta_dropped_falls_back_to_metas_first_example(standin: GraphStandIn, token: str) -> None:
    standin.state.quality_datasets = {PIXEL: [PURCHASE]}
    standin.state.quality_removed_fields = {"dedupe_key_feedback"}
    (read,) = reader_for(standin, token).read_all(time.monotonic() + 10)
    assert read.ok
    assert read.fields_fallback
    assert [r.query["fields"] for r in standin.requests] == [[FULL_FIELDS], [MINIMAL_FIELDS]]
    assert read.quality is not None
    assert read.quality.events[0].composite_score == 8.1


# ------------------------------------------------------------------- the scheduled handler, in-process
class Context:
    def __init__(self, remaining_ms: int) -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000
        self.function_name, self.memory_limit_in_mb, self.aws_request_id = "QualityFunction", 256, "req-1"
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:QualityFunction"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def run_handler(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> tuple[Any, list[dict[str, Any]]]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import capi_relay.quality.handler as handler  # the first import runs start() too

    config = handler.start()  # what INIT does in a fresh execution environment: read and validate the settings
    # Powertools' handler keeps the stream it was created with (an earlier test's captured stdout): point the
    # reader's loggers at this test's.
    for name in ("capi_relay.quality.publish", "capi_relay", config.service_name):
        for log_handler in logging.getLogger(name).handlers:
            if isinstance(log_handler, logging.StreamHandler):
                log_handler.stream = sys.stdout  # not setStream: it flushes the old, closed one
    capsys.readouterr()
    result = handler.lambda_handler({"source": "aws.scheduler"}, Context(20_000))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return result, lines


def value(line: dict[str, Any], name: str) -> Any:
    """An EMF value (Powertools writes a list of values)."""
    raw = line[name]
    return raw[0] if isinstance(raw, list) and len(raw) == 1 else raw


def emf(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        for directive in line.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                out.setdefault(metric["Name"], []).append(line)
    return out


def test_the_handler_reads_with_the_relays_secret_and_publishes_emf(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], resources: Resources,
    standin: GraphStandIn, token: str,
) -> None:  # fmt: skip
    # Given the relay's secret in moto and a pixel whose phone coverage collapsed
    standin.state.quality_datasets = {PIXEL: [PURCHASE]}
    env = {"ACCESS_TOKEN_SECRET_ID": resources.secret_id, "QUALITY_PIXEL_IDS": PIXEL, "GRAPH_API_URL": standin.url,
           "POWERTOOLS_METRICS_NAMESPACE": "CapiRelayTest", "POWERTOOLS_SERVICE_NAME": "capi-relay"}  # fmt: skip
    result, lines = run_handler(monkeypatch, env, capsys)
    # Then one read, the default metric families, the collapse counted and logged, no token anywhere
    assert result == {"pixels": 1, "read": 1, "errors": {}, "metrics": 5, "capped": 0, "collapsed_keys": 1}
    metrics = emf(lines)
    assert set(metrics) == {"EmqComposite", "MatchKeyCoverage", "EventCoverage", "MatchKeysBelowFloor"}
    (emq,) = metrics["EmqComposite"]
    assert value(emq, "EmqComposite") == 8.1
    assert (emq["pixel"], emq["event_name"], emq["service"]) == (PIXEL, "Purchase", "capi-relay")
    assert emq["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "CapiRelayTest"
    assert sorted(m["match_key"] for m in metrics["MatchKeyCoverage"]) == ["email", "phone"]
    assert [value(m, "MatchKeysBelowFloor") for m in metrics["MatchKeysBelowFloor"]] == [1.0]
    collapsed = [line for line in lines if line.get("message") == "match key coverage below the floor"]
    assert [(c["match_key"], c["coverage_pct"]) for c in collapsed] == [("phone", 12.0)]
    assert token not in json.dumps(lines)


def test_the_handler_with_a_token_lacking_the_permission_logs_one_line_and_one_metric(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], resources: Resources,
    standin: GraphStandIn, token: str,
) -> None:  # fmt: skip
    standin.state.quality_denied_tokens = {token}
    env = {"ACCESS_TOKEN_SECRET_ID": resources.secret_id, "QUALITY_PIXEL_IDS": PIXEL, "GRAPH_API_URL": standin.url}
    result, lines = run_handler(monkeypatch, env, capsys)
    assert result["errors"] == {"permission_missing": 1}
    errors = [line for line in lines if line.get("level") == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["reason"] == "permission_missing"
    assert "Use events dataset" in errors[0]["what_to_do"]
    assert list(emf(lines)) == ["QualityReadErrors"]


def test_the_cli_prints_metas_view_beside_the_relays_sample(
    monkeypatch: pytest.MonkeyPatch, standin: GraphStandIn, token: str, tmp_path: Path
) -> None:
    from capi_relay.tools.cli import main

    standin.state.quality_datasets = {PIXEL: [PURCHASE]}
    now = int(time.time())
    sample = tmp_path / "sample.jsonl"
    events = [{"event_name": "Purchase", "event_time": now, "event_id": f"e{i}", "action_source": "website",
               "event_source_url": "https://shop.example.com/", "custom_data": {"value": 1, "currency": "EUR"},
               "user_data": {"em": f"u{i}@example.com", "client_user_agent": "Mozilla/5.0",
                             **({"ph": "+44 20 7946 0018"} if i < 3 else {})}} for i in range(4)]  # fmt: skip
    sample.write_text("\n".join(json.dumps(e) for e in events))
    monkeypatch.setenv("GRAPH_API_URL", standin.url)
    monkeypatch.setenv("CAPI_RELAY_ACCESS_TOKEN", token)
    out = io.StringIO()
    assert main(["quality", "--pixel-id", PIXEL, "--sample", str(sample), "--json"], stdout=out) == 0
    doc = json.loads(out.getvalue())
    purchase = doc["events"]["Purchase"]
    assert purchase["emq"] == 8.1
    assert purchase["keys"]["phone"] == 12.0
    assert purchase["relay_sample"] == {"events": 4, "keys": {"email": 100.0, "phone": 75.0, "user_agent": 100.0}}
    assert purchase["recommendations"][0]["name"] == "Send phone numbers with a country code"
    out = io.StringIO()
    assert main(["quality", "--pixel-id", PIXEL, "--sample", str(sample)], stdout=out) == 0
    text = out.getvalue()
    assert "Purchase: EMQ 8.1/10" in text
    assert "phone" in text
    assert "12%" in text
    assert "75%" in text
    standin.state.quality_denied_tokens = {token}
    assert main(["quality", "--pixel-id", PIXEL], stdout=io.StringIO()) == 1


def test_the_handler_reads_the_secret_once_for_every_pixel(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], resources: Resources,
    standin: GraphStandIn, token: str,
) -> None:  # fmt: skip
    pixels = [str(int(PIXEL) + i) for i in range(3)]
    standin.state.quality_datasets = {p: [PURCHASE] for p in pixels}
    env = {"ACCESS_TOKEN_SECRET_ID": resources.secret_id, "QUALITY_PIXEL_IDS": ",".join(pixels),
           "GRAPH_API_URL": standin.url}  # fmt: skip
    result, _ = run_handler(monkeypatch, env, capsys)
    handler = sys.modules["capi_relay.quality.handler"].function()  # what the invocation built
    assert result["read"] == 3
    assert handler.reader._tokens.fetches == 1
    assert [r.query["dataset_id"] for r in standin.requests] == [[p] for p in pixels]


def test_an_app_secret_adds_appsecret_proof_to_the_query_never_the_token(standin: GraphStandIn, token: str) -> None:
    import hashlib
    import hmac

    standin.state.app_secret = "s3cret"
    cfg = QualityConfig(access_token_secret_id=None, pixel_ids=(PIXEL,), graph_api_url=standin.url)
    client = GraphClient(standin.url, "v26.0")
    reader = QualityReader(client, StaticTokens(Credentials(token, app_secret="s3cret")), cfg)
    assert reader.read(PIXEL, time.monotonic() + 10).ok
    (request,) = standin.requests
    expected = hmac.new(b"s3cret", token.encode(), hashlib.sha256).hexdigest()
    assert request.query["appsecret_proof"] == [expected]
    assert "access_token" not in request.query

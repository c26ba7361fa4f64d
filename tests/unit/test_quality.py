"""The quality reader's pure parts: parsing Meta's documented answers (and hostile ones), the read's retry
and error decisions (an in-process fake client), the metric plan and its cap, the key-collapse decision and
the model of the template's EMQ-drop alarm."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_relay.aws.secrets import Credentials, SecretError
from capi_relay.deliver.policy import ErrorKind, GraphError, classify
from capi_relay.quality import decide
from capi_relay.quality.config import QualityConfig, quality_config_from_env
from capi_relay.quality.dataset_quality import FULL_FIELDS, MAX_EVENTS, MAX_ITEMS, MINIMAL_FIELDS, parse
from capi_relay.quality.reader import PixelRead, QualityReader, error_reason
from capi_relay.settings import SettingsError

EXAMPLES = json.loads((Path(__file__).resolve().parents[1] / "data" / "dataset_quality_examples.json").read_text())


def example(name: str) -> dict[str, Any]:
    (found,) = [e for e in EXAMPLES["examples"] if e["name"] == name]
    response: dict[str, Any] = found["response"]
    return response


def config(**kw: Any) -> QualityConfig:
    return QualityConfig(access_token_secret_id="s", pixel_ids=kw.pop("pixel_ids", ("1",)), **kw)


def event(name: str = "Purchase", score: float | None = 8.0, keys: dict[str, float] | None = None) -> dict[str, Any]:
    emq: dict[str, Any] = {"match_key_feedback": [{"identifier": k, "coverage": {"percentage": v}}
                                                 for k, v in (keys or {}).items()]}  # fmt: skip
    if score is not None:
        emq["composite_score"] = score
    return {"event_name": name, "event_match_quality": emq}


# -------------------------------------------------------------------------------------------- parsing
def test_parses_metas_documented_emq_example() -> None:
    quality = parse(example("emq"))
    assert [e.event_name for e in quality.events] == ["pLTVPurchase", "CompleteRegistration"]
    first, second = quality.events
    assert first.composite_score == 6.2
    assert first.match_keys == {"user_agent": 100.0, "external_id": 100.0}
    assert second.match_keys == {"email": 100.0, "ip_address": 99.9}
    assert first.coverage("email") == 0.0  # Meta listed the keys it saw: email was not among them
    assert not quality.notes


def test_parses_metas_documented_coverage_dedup_freshness_and_diagnostics_examples() -> None:
    (coverage,) = parse(example("event_coverage")).events
    assert (coverage.event_coverage_pct, coverage.event_coverage_goal_pct) == (34.1, 75.0)
    (dedup,) = parse(example("dedupe_key_feedback")).events
    assert [d.key for d in dedup.dedup_keys] == ["event_id", "external_id", "fbp"]
    assert dedup.dedup_rate_pct == pytest.approx(30.76)  # Meta: "incremental for each dedupe key"
    view, lead = parse(example("data_freshness")).events
    assert (view.upload_frequency, view.freshness_hours, lead.freshness_hours) == ("real_time", 0.0, 1.0)
    (diag,) = parse(example("diagnostics")).events
    assert next(d.name for d in diag.diagnostics) == "Update your IPv4 IP addresses to IPv6 IP addresses"
    assert diag.diagnostics[1].affected_event_count == 19567
    assert diag.diagnostics[1].percentage == 61.5
    assert diag.composite_score is None
    assert diag.coverage("email") is None  # no key feedback requested: nothing to say about keys


def test_every_documented_example_parses_without_notes() -> None:
    for item in EXAMPLES["examples"]:
        quality = parse(item["response"])
        assert quality.events, item["name"]
        assert not {k for k in quality.notes if k != "match_key_invalid"}, (item["name"], quality.notes)


def test_the_field_tables_spelling_of_the_dedup_field_and_a_data_wrapper_are_read() -> None:
    entry = {"event_name": "Lead", "dedup_key_feedback": [
        {"dedupe_key": "event_id", "overall_browser_coverage_from_dedupe_key": {"percentage": 40}}]}  # fmt: skip
    (lead,) = parse({"web": [entry]}).events
    assert lead.dedup_rate_pct == 40.0
    (wrapped,) = parse({"data": [{"web": [event("Purchase", 7.5)]}]}).events
    assert wrapped.composite_score == 7.5


@pytest.mark.parametrize("bad", [11, -1, "7.5", True, math.nan, math.inf, None, [7]])
def test_a_score_outside_0_10_or_not_a_number_is_not_published(bad: Any) -> None:
    (parsed,) = parse({"web": [event(score=None) | {"event_match_quality": {"composite_score": bad}}]}).events
    assert parsed.composite_score is None


@pytest.mark.parametrize(
    "doc",
    [None, [], "web", {"web": "x"}, {"web": [1, "a", None]}, {"web": [{"event_name": ""}]}, {"error": {"code": 1}},
     {"web": [{"event_name": "P", "event_match_quality": "x", "event_coverage": [], "data_freshness": 3}]},
     {"web": [{"event_name": "P", "event_match_quality": {"match_key_feedback": [{"identifier": 1}, "x",
                                                                                  {"identifier": "e"}]}}]}],
)  # fmt: skip
def test_hostile_shapes_are_skipped_and_counted_never_raised(doc: Any) -> None:
    quality = parse(doc)
    assert all(e.composite_score is None for e in quality.events)
    assert quality.notes


def test_numbers_too_large_for_a_float_and_odd_wrappers_are_skipped() -> None:
    (parsed,) = parse({"web": [event(score=None, keys={"email": 10**400})]}).events
    assert parsed.match_keys == {}
    assert parse({"data": [{"web": 5}, {"web": "x"}, 3]}).events == ()


def test_lists_and_texts_are_capped() -> None:
    many = {"web": [event(f"E{i}", 5.0, {f"k{j}": 1.0 for j in range(MAX_ITEMS + 10)}) for i in range(MAX_EVENTS + 5)]}
    many["web"][0]["event_match_quality"]["diagnostics"] = [{"name": "n" * 5000}]
    quality = parse(many)
    assert len(quality.events) == MAX_EVENTS
    assert len(quality.events[0].match_keys) == MAX_ITEMS
    assert len(quality.events[0].diagnostics[0].name) == 1000
    assert quality.notes["web_capped"] == 1


def test_the_fallback_fields_are_metas_first_example_verbatim() -> None:
    assert EXAMPLES["examples"][0]["fields"] == MINIMAL_FIELDS
    assert FULL_FIELDS.startswith("web{")
    assert FULL_FIELDS.count("{") == FULL_FIELDS.count("}")


# -------------------------------------------------------------------------------------- error reasons
@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [(400, {"code": 10, "message": "(#10) Application does not have permission for this action"}, "permission_missing"),
     (403, {"code": 200, "message": "(#200) Permissions error"}, "permission_missing"),
     (400, {"code": 2044055, "message": "The dataset_id that was inputted doesn't exist."}, "unknown_dataset"),
     (400, {"code": 100, "error_subcode": 2044055}, "unknown_dataset"),
     (400, {"code": 100, "error_subcode": 33}, "unknown_dataset"),
     (400, {"code": 190}, "token_invalid"), (400, {"code": 17}, "throttled"), (400, {"code": 80004}, "throttled"),
     (400, {"code": 2635}, "version_retired"), (500, {"code": 2, "is_transient": True}, "transient"),
     (400, {"code": 100, "message": "(#100) Tried accessing nonexisting field (x)"}, "request_refused")],
)  # fmt: skip
def test_metas_errors_map_to_stable_reasons_by_code(status: int, error: dict[str, Any], reason: str) -> None:
    assert error_reason(classify(status, {"error": error}, None)) == reason


# ---------------------------------------------------------------------------------------- the reader
class FakeClient:
    """Answers in order: a dict is a 2xx body, a GraphError is raised; records each query."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.queries: list[dict[str, str]] = []

    def get_json(
        self, path: str, query: dict[str, str], credentials: Credentials, timeout_s: float | None = None
    ) -> Any:
        assert path == "dataset_quality"
        assert timeout_s is not None
        self.queries.append(dict(query))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Tokens:
    def __init__(self, fail: SecretError | None = None) -> None:
        self.calls: list[bool] = []
        self.fail = fail

    def get(self, pixel_id: str, *, force_refresh: bool = False) -> Credentials:
        self.calls.append(force_refresh)
        if self.fail:
            raise self.fail
        return Credentials("tok")


def graph_error(code: int, kind: ErrorKind, subcode: int | None = None) -> GraphError:
    return GraphError(kind, http_status=400, code=code, subcode=subcode)


def read(client: FakeClient, tokens: Tokens | None = None, **kw: Any) -> PixelRead:
    clock = kw.pop("clock", lambda: 0.0)
    reader = QualityReader(client, tokens or Tokens(), config(**kw), clock=clock)
    return reader.read("1", deadline=60.0)


def test_a_healthy_read_asks_for_every_field_once() -> None:
    client = FakeClient({"web": [event(keys={"email": 90})]})
    result = read(client, agent_name="acme")
    assert result.ok
    assert result.attempts == 1
    assert client.queries == [{"dataset_id": "1", "fields": FULL_FIELDS, "agent_name": "acme"}]


def test_a_refused_field_falls_back_to_metas_first_example_once() -> None:
    client = FakeClient(graph_error(100, ErrorKind.REQUEST), {"web": [event()]})
    result = read(client)
    assert result.ok
    assert result.fields_fallback
    assert [q["fields"] for q in client.queries] == [FULL_FIELDS, MINIMAL_FIELDS]
    client = FakeClient(graph_error(100, ErrorKind.REQUEST), graph_error(100, ErrorKind.REQUEST))
    assert read(client).error == "request_refused"


def test_permission_missing_is_one_attempt_and_one_reason() -> None:
    client = FakeClient(graph_error(10, ErrorKind.CONFIG))
    result = read(client)
    assert (result.error, result.attempts) == ("permission_missing", 1)


def test_a_throttle_is_not_retried_and_keeps_metas_estimate() -> None:
    error = GraphError(ErrorKind.THROTTLED, http_status=400, code=80004, retry_after_s=600.0)
    result = read(FakeClient(error))
    assert (result.error, result.attempts, result.retry_after_s) == ("throttled", 1, 600.0)


def test_a_transient_failure_is_retried_once() -> None:
    transient = GraphError(ErrorKind.TRANSIENT, detail="attempt time cap passed")
    assert read(FakeClient(transient, {"web": []})).ok
    assert read(FakeClient(transient, transient)).error == "transient"


def test_an_auth_failure_forces_one_secret_refresh() -> None:
    tokens = Tokens()
    result = read(FakeClient(graph_error(190, ErrorKind.AUTH), graph_error(190, ErrorKind.AUTH)), tokens)
    assert result.error == "token_invalid"
    assert tokens.calls == [False, True]


def test_no_secret_no_request() -> None:
    client = FakeClient()
    result = read(client, Tokens(SecretError("secret_unavailable", "down")))
    assert (result.error, client.queries) == ("secret_unavailable", [])


def test_no_attempt_starts_past_the_deadline_and_each_gets_only_the_time_left() -> None:
    client = FakeClient({"web": []})
    result = read(client, clock=lambda: 59.0)  # deadline 60, margin 2
    assert (result.error, client.queries) == ("deadline", [])
    seen: list[float | None] = []

    class Timed(FakeClient):
        def get_json(self, path: str, query: dict[str, str], credentials: Credentials,
                     timeout_s: float | None = None) -> Any:  # fmt: skip
            seen.append(timeout_s)
            return {"web": []}

    assert read(Timed(), clock=lambda: 50.0).ok
    assert seen == [8.0]


# -------------------------------------------------------------------------------- plan and decisions
def ok(pixel: str, *events: dict[str, Any]) -> PixelRead:
    return PixelRead(pixel, quality=parse({"web": list(events)}))


def names(plan: decide.Plan) -> list[tuple[str, float, tuple[tuple[str, str], ...]]]:
    return [(p.name, p.value, p.dimensions) for p in plan.points]


def test_plan_publishes_watched_events_and_keys_only_most_useful_first() -> None:
    cfg = config(match_keys=("email", "phone"), families=frozenset({"emq", "keys", "coverage"}))
    purchase = event("Purchase", 8.1, {"email": 95, "phone": 91, "ip_address": 100}) | {
        "event_coverage": {"percentage": 80, "goal_percentage": 75}}  # fmt: skip
    plan = decide.plan(cfg, [ok("1", purchase, event("PageView", 5.0, {"email": 1}))])
    dims = (("pixel", "1"), ("event_name", "Purchase"))
    assert names(plan) == [
        ("EmqComposite", 8.1, dims),
        ("MatchKeyCoverage", 95.0, (*dims, ("match_key", "email"))),
        ("MatchKeyCoverage", 91.0, (*dims, ("match_key", "phone"))),
        ("EventCoverage", 80.0, dims),
    ]  # no MatchKeysBelowFloor for zero collapsed keys: its alarm reads a missing datapoint as not breaching
    assert plan.capped == 0


def test_the_cap_bounds_the_series_and_drops_the_least_useful() -> None:
    cfg = config(pixel_ids=("1", "2"), events=("*",), match_keys=("email",), max_metrics=3)
    reads = [ok(p, event(n, 7.0, {"email": 90})) for p in ("1", "2") for n in ("A", "B")]
    plan = decide.plan(cfg, reads)
    series = [p for p in plan.points if p.name not in ("MatchKeysBelowFloor", "QualityReadErrors")]
    assert [p.name for p in series] == ["EmqComposite"] * 3
    assert plan.capped == 5  # 4 EMQ + 4 key coverage - 3


def test_dedup_and_freshness_are_opt_in() -> None:
    entry = event("Purchase", 8.0) | {"data_freshness": {"upload_frequency": "hourly"},
                                      "dedupe_key_feedback": [{"dedupe_key": "event_id",
                                      "overall_browser_coverage_from_dedupe_key": {"percentage": 60}}]}  # fmt: skip
    assert "DedupRate" not in str(names(decide.plan(config(), [ok("1", entry)])))
    plan = decide.plan(config(families=frozenset({"dedup", "freshness"})), [ok("1", entry)])
    assert [(p.name, p.value, p.unit) for p in plan.points][:2] == [("DedupRate", 60.0, "Percent"),
                                                                    ("DataFreshness", 3600.0, "Seconds")]  # fmt: skip


def test_a_key_below_the_floor_or_missing_from_metas_list_has_collapsed() -> None:
    cfg = config(match_keys=("email", "phone"), key_coverage_floor_pct=50)
    reads = [ok("1", event("Purchase", 8.0, {"email": 95, "phone": 12}), event("Lead", 7.0, {"phone": 90}))]
    collapsed = decide.collapses(cfg, reads)
    assert [(c.event_name, c.match_key, c.coverage_pct) for c in collapsed] == [("Purchase", "phone", 12.0)]
    reads = [ok("1", event("Purchase", 8.0, {"email": 95}))]  # phone no longer reaches Meta at all
    assert [(c.match_key, c.coverage_pct) for c in decide.collapses(cfg, reads)] == [("phone", 0.0)]
    plan = decide.plan(cfg, reads)
    assert ("MatchKeysBelowFloor", 1.0, ()) in names(plan)


def test_an_event_meta_did_not_return_or_without_key_feedback_decides_nothing() -> None:
    cfg = config(match_keys=("email",))
    no_keys = {"event_name": "Purchase", "event_coverage": {"percentage": 10}}
    assert decide.collapses(cfg, [ok("1", event("PageView", 5.0, {}))]) == []
    assert decide.collapses(cfg, [ok("1", no_keys)]) == []


def test_read_errors_publish_one_metric_by_reason_and_nothing_else() -> None:
    reads = [PixelRead("1", error="permission_missing"), PixelRead("2", error="permission_missing")]
    plan = decide.plan(config(pixel_ids=("1", "2")), reads)
    assert names(plan) == [("QualityReadErrors", 2.0, (("reason", "permission_missing"),))]
    assert plan.collapses == []  # not an alarm: no MatchKeysBelowFloor without a read


def test_a_healthy_read_publishes_no_error_metric() -> None:
    plan = decide.plan(config(), [ok("1", event())])
    assert "QualityReadErrors" not in [p.name for p in plan.points]


def test_a_read_without_collapsed_keys_publishes_no_zero_for_the_collapse_alarm() -> None:
    # An idle stack pays for no series that only ever says 0 (issue 21): the key-coverage alarm treats a
    # missing datapoint as not breaching, so the zero carried no information.
    plan = decide.plan(config(match_keys=("email",)), [ok("1", event("Purchase", 8.0, {"email": 95}))])
    assert "MatchKeysBelowFloor" not in [p.name for p in plan.points]


# ---------------------------------------------------------------------- the EMQ-drop alarm (model)
def test_a_stable_score_never_alarms() -> None:
    assert not decide.emq_drop_alarm([8.1, 8.0, 8.2, 8.1] * 6, drop=1.0)


def test_a_drop_of_the_configured_size_held_for_two_reads_alarms() -> None:
    history = [8.1] * 22 + [6.2, 6.2]
    assert decide.emq_drop_alarm(history, drop=1.0)
    assert not decide.emq_drop_alarm(history, drop=2.0)  # 8.1 average minus 6.2 is < 2 points


def test_one_bad_read_does_not_alarm() -> None:
    assert not decide.emq_drop_alarm([8.1] * 23 + [6.0], drop=1.0)


def test_a_slow_drift_alarms_once_it_is_far_enough_below_the_days_mean() -> None:
    drift = [8.0 - 0.1 * i for i in range(24)]  # 8.0 -> 5.7 over a day; mean 6.85
    assert decide.emq_drop_alarm(drift, drop=1.0)
    assert not decide.emq_drop_alarm(drift[:6], drop=1.0)  # the first six hours: 0.5 points


def test_missing_hours_are_not_breaching() -> None:
    assert not decide.emq_drop_alarm([None] * 24, drop=0.1)
    assert not decide.emq_drop_alarm([8.0, None, None, 7.9] + [None] * 20, drop=1.0)


# ----------------------------------------------------------------------------------------- settings
def test_settings_defaults_and_pixel_fallback() -> None:
    cfg = quality_config_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "123"})
    assert (cfg.pixel_ids, cfg.events, cfg.match_keys) == (("123",), ("Purchase",), ("email", "phone"))
    assert cfg.families == {"emq", "keys", "coverage"}
    cfg = quality_config_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "QUALITY_PIXEL_IDS": "1, 2,1", "QUALITY_EVENTS": "*"})
    assert (cfg.pixel_ids, cfg.watches("Anything")) == (("1", "2"), True)


@pytest.mark.parametrize(
    ("env", "name"),
    [({}, "ACCESS_TOKEN_SECRET_ID"), ({"QUALITY_PIXEL_IDS": "12a"}, "QUALITY_PIXEL_IDS"),
     ({"QUALITY_PIXEL_IDS": ",".join(str(i) for i in range(11))}, "QUALITY_PIXEL_IDS"),
     ({"QUALITY_METRICS": "emq,cost"}, "QUALITY_METRICS"), ({"QUALITY_MAX_METRICS": "0"}, "QUALITY_MAX_METRICS"),
     ({"QUALITY_KEY_COVERAGE_FLOOR": "101"}, "QUALITY_KEY_COVERAGE_FLOOR"),
     ({"QUALITY_AGENT_NAME": "Acme Corp"}, "QUALITY_AGENT_NAME"),
     ({"GRAPH_API_URL": "http://10.0.0.1"}, "GRAPH_API_URL"),
     ({"QUALITY_EVENTS": "Purchase,<script>"}, "QUALITY_EVENTS")],
)  # fmt: skip
def test_bad_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    base = {"ACCESS_TOKEN_SECRET_ID": "s"} if name != "ACCESS_TOKEN_SECRET_ID" else {}
    with pytest.raises(SettingsError, match=name):
        quality_config_from_env({**base, **env})


# Any JSON Meta (or a proxy) could answer, including the documented keys with values of the wrong type.
_KEYS = ["web", "data", "event_name", "event_match_quality", "composite_score", "match_key_feedback", "identifier",
         "coverage", "percentage", "diagnostics", "name", "event_coverage", "dedupe_key_feedback", "dedupe_key",
         "overall_browser_coverage_from_dedupe_key", "data_freshness", "upload_frequency",
         "goal_percentage"]  # fmt: skip
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_parse_and_plan_never_raise_on_any_json(doc: Any) -> None:
    quality = parse(doc)
    read = PixelRead("1", quality=quality)
    plan = decide.plan(config(events=("*",), families=frozenset({"emq", "keys", "coverage", "dedup", "freshness"})),
                       [read])  # fmt: skip
    for point in plan.points:
        assert math.isfinite(point.value)


def test_the_reader_is_built_on_the_first_invocation_after_init_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "123", "QUALITY_PIXEL_IDS": ""}.items():
        monkeypatch.setenv(key, value)
    import capi_relay.quality.handler as handler  # the first import runs start() too

    built: list[QualityConfig] = []
    real_build = handler.build

    def counting(config: QualityConfig) -> Any:
        built.append(config)
        return real_build(config)

    monkeypatch.setattr(handler, "build", counting)
    # Given INIT (start) validated the configuration: nothing is built yet
    assert handler.start().pixel_ids == ("123",)
    assert built == []
    # When the first invocation asks for the reader, twice
    first, second = handler.function(), handler.function()
    # Then it was built once, from INIT's configuration
    assert first is second
    assert [c.pixel_ids for c in built] == [("123",)]
    # And a bad configuration still fails INIT, naming the variable
    monkeypatch.setenv("PIXEL_ID", "abc")
    with pytest.raises(SettingsError, match="PIXEL_ID"):
        handler.start()

"""Graph API version lifecycle: Meta's version table, days left, the metric, and check's warning 90 days ahead."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from aws_lambda_powertools import Metrics

from capi_relay.deliver import versions as graph_versions
from capi_relay.deliver.versions import VERSIONS, WARN_DAYS, days_left, expiry, version_warning
from capi_relay.telemetry import publish_version_days_left
from capi_relay.tools import cli
from tests.factories import make_event

DEC_6 = date(2026, 12, 6)


def test_the_table_is_metas_changelog_in_order() -> None:
    # Meta's changelog (G-CL): v20.0 expired 2026-09-24, v21.0 expires 2027-01-21; v27.0 released 2026-11-04
    assert expiry("v20.0") == date(2026, 9, 24)
    assert expiry("v21.0") == date(2027, 1, 21)
    assert [v.name for v in VERSIONS][-1] == "v27.0"
    assert VERSIONS[-1].released == date(2026, 11, 4)
    releases = [v.released for v in VERSIONS]
    assert releases == sorted(releases)
    announced = [v.expires for v in VERSIONS if v.expires is not None]
    assert announced == sorted(announced)
    assert all(v.expires is None or v.expires > v.released for v in VERSIONS)


def test_days_left() -> None:
    assert days_left("v21.0", DEC_6) == 46
    assert days_left("v20.0", DEC_6) == 0  # expired
    assert days_left("v25.0", DEC_6) == (date(2028, 7, 29) - DEC_6).days
    # not announced: the earliest Meta's policy allows (two years after the next release)
    assert expiry("v26.0") == date(2028, 11, 4)
    assert days_left("v27.0", DEC_6) >= 730
    assert days_left("v28.0", DEC_6) >= 730  # newer than the table: at least as long as the newest
    assert days_left("v9.0", DEC_6) == 0  # unknown and old: treated as expired
    assert days_left("latest", DEC_6) == 0


def test_the_warning_starts_90_days_before_expiry() -> None:
    end = date(2027, 1, 21)
    assert version_warning("v21.0", date.fromordinal(end.toordinal() - WARN_DAYS - 1)) is None
    warning = version_warning("v21.0", date.fromordinal(end.toordinal() - WARN_DAYS + 1))
    assert warning is not None
    assert (warning["warning"], warning["days_left"], warning["newest"]) == (
        graph_versions.EXPIRING, WARN_DAYS - 1, "v27.0"
    )  # fmt: skip


def _now(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(("version", "warned"), [("v21.0", True), ("v20.0", True), ("v26.0", False), (None, False)])
def test_check_warns_when_the_relays_version_is_within_90_days(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], version: str | None, warned: bool
) -> None:
    if version is None:
        monkeypatch.delenv("GRAPH_API_VERSION", raising=False)  # the relay's default
    else:
        monkeypatch.setenv("GRAPH_API_VERSION", version)
    now = _now(DEC_6)
    document, code = cli.check(json.dumps(make_event(now=now)), now)
    found = [w for w in document["warnings"] if w["warning"] == graph_versions.EXPIRING]
    assert bool(found) is warned
    assert code == 0  # a warning, not a rejection
    if warned:
        assert found[0]["graph_api_version"] == version
        assert f"GRAPH_API_VERSION {version} expires" in capsys.readouterr().err


def test_the_days_left_metric_is_one_key_of_the_invocations_emf_document() -> None:
    metrics = Metrics(namespace="CapiRelayTest", service="capi-relay")
    metrics.add_metric(name="RecordsReceived", unit="Count", value=1)
    publish_version_days_left(metrics, 46)
    blob: dict[str, Any] = dict(metrics.serialize_metric_set())
    metrics.clear_metrics()
    names = [m["Name"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "GraphApiVersionDaysLeft" in names
    assert blob["GraphApiVersionDaysLeft"] in (46.0, [46.0])

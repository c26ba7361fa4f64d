"""End to end: the quality reader as packaged (``make build``: the QualityFunction artifact, the same files as
RelayFunction) under the Lambda Runtime Interface Emulator, the token from moto's Secrets Manager, Meta's
Dataset Quality API from the Graph stand-in: a healthy read, then a token without the permission.

Needs ``make build`` first (``make e2e`` depends on it); a missing artifact FAILS these tests."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from local.graph_standin import GraphStandIn
from local.rie import LambdaEmulator
from local.stack import DEMO_PIXEL_ID, MotoServer, dummy_token, function_env, provision

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_DIR = ROOT / ".aws-sam" / "build" / "QualityFunction"
HANDLER = "capi_relay.quality.handler.lambda_handler"
KEYS = [{"identifier": "email", "coverage": {"percentage": 98.0}},
        {"identifier": "phone", "coverage": {"percentage": 64.0}}]  # fmt: skip
PURCHASE = {"event_name": "Purchase", "event_match_quality": {"composite_score": 7.4, "match_key_feedback": KEYS},
            "event_coverage": {"percentage": 77.0, "goal_percentage": 75}}  # fmt: skip


def metrics(logs: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for line in logs.splitlines():
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        for directive in doc.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                out.setdefault(metric["Name"], []).append(doc)
    return out


def test_the_packaged_reader_reads_publishes_and_reports_a_missing_permission_once(moto_server: MotoServer) -> None:
    if not (ARTIFACT_DIR / "capi_relay" / "quality" / "handler.py").is_file():
        pytest.fail(
            f"the packaged reader is missing: {ARTIFACT_DIR.relative_to(ROOT)} (run `make build`)", pytrace=False
        )
    token = dummy_token()
    resources = provision(moto_server.endpoint_url, token=token, prefix=f"q{uuid.uuid4().hex[:10]}")
    with GraphStandIn(tokens={token}) as standin:
        standin.state.quality_datasets = {DEMO_PIXEL_ID: [PURCHASE]}
        env = function_env(resources, standin.url, extra={"QUALITY_PIXEL_IDS": DEMO_PIXEL_ID})
        with LambdaEmulator(ARTIFACT_DIR, env, handler=HANDLER, timeout_s=60) as fn:
            # Given a healthy pixel: one GET, the default metric families, no error metric
            result, error, logs = fn.invoke({"source": "aws.scheduler"})
            assert not error, logs[-2000:]
            assert result == {"pixels": 1, "read": 1, "errors": {}, "metrics": 4, "capped": 0, "collapsed_keys": 0}
            published = metrics(logs)  # no MatchKeysBelowFloor: nothing collapsed, and no zero is published
            assert set(published) == {"EmqComposite", "MatchKeyCoverage", "EventCoverage"}
            (emq,) = published["EmqComposite"]
            assert (emq["pixel"], emq["event_name"]) == (DEMO_PIXEL_ID, "Purchase")
            (request,) = [r for r in standin.requests if r.method == "GET"]
            assert request.token_location == "bearer"
            assert not request.token_in_url
            # When the token loses the dataset permission: one error line, one metric, nothing else
            standin.state.quality_denied_tokens = {token}
            result, error, logs = fn.invoke({"source": "aws.scheduler"})
            assert not error
            assert result["errors"] == {"permission_missing": 1}
            errors = [json.loads(x) for x in logs.splitlines() if x.startswith("{") and '"level":"ERROR"' in x]
            assert len(errors) == 1
            assert errors[0]["reason"] == "permission_missing"
            assert list(metrics(logs)) == ["QualityReadErrors"]
            assert token not in logs

"""Each event's fate (issue 10) through the packaged function (``make build``) under the Lambda Runtime
Interface Emulator, fed by the SQS event-source emulator from moto, posting to the Graph stand-in: the relay's
own SQS calls (quarantine, parking) go from inside the function to moto, as they would to SQS.

Run under ``flock /tmp/capi-rie.lock`` (the emulator binds port 9001 internally)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.esm import emulator_invoker
from local.graph_standin import GraphStandIn
from local.stack import MotoServer
from tests.fate_harness import Harness, assert_partition, ev

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_DIR = ROOT / ".aws-sam" / "build" / "RelayFunction"


def _function(env: dict[str, str]) -> Iterator[Any]:
    if not (ARTIFACT_DIR / "capi_relay" / "handler.py").is_file():
        pytest.fail(f"the packaged function is missing: {ARTIFACT_DIR.relative_to(ROOT)} (run `make build`)",
                    pytrace=False)  # fmt: skip
    from local.rie import LambdaEmulator

    emulator = LambdaEmulator(str(ARTIFACT_DIR), env)
    try:
        emulator.start()
        emulator.invoke({"Records": []})  # INIT now, inside no batch's visibility timeout
        yield emulator
    finally:
        emulator.stop()


def test_packaged_multi_event_message_delivers_the_valid_events_and_quarantines_the_rest(
    moto_server: MotoServer, token: str, standin: GraphStandIn
) -> None:
    h = Harness(moto_server, token, standin, visibility_timeout_s=5)
    data = [ev("e2e-good-1"), ev("e2e-old", event_time=int(time.time()) - 8 * 86_400), ev("e2e-meta-bad"),
            ev("e2e-good-2")]  # fmt: skip
    standin.state.reject_event_ids = {"e2e-meta-bad"}
    (mid,) = h.send([json.dumps({"data": data})])
    bad = h.send(["{not json"])[0]
    for function in _function(h.env()):
        outcomes = h.esm_with(emulator_invoker(function)).run_until_drained(60)
        assert [o.failed for o in outcomes] == [[]]
    fates = h.fates()
    assert_partition(fates, {(mid, 0): "e2e-good-1", (mid, 1): "Q", (mid, 2): "Q", (mid, 3): "e2e-good-2",
                             (bad, None): "Q"})  # fmt: skip
    assert fates.quarantined[(mid, 1)]["rejection_reason"] == "event_too_old"
    assert fates.quarantined[(mid, 2)]["rejection_reason"] == "graph_invalid_100_2804036"
    assert fates.quarantined[(mid, 2)]["pixel_id"] == "100000000000001"
    assert fates.quarantined_bodies[(bad, None)] == "{not json"


def test_packaged_fifo_poison_is_quarantined_and_its_group_keeps_order(
    moto_server: MotoServer, token: str, standin: GraphStandIn
) -> None:
    h = Harness(moto_server, token, standin, fifo=True, visibility_timeout_s=5)
    standin.state.reject_event_ids = {"fa-poison"}
    a_ids = h.send([json.dumps(ev(e)) for e in ("fa-1", "fa-poison", "fa-2")], group="A")
    b_ids = h.send([json.dumps(ev(e)) for e in ("fb-1", "fb-2")], group="B")
    for function in _function(h.env()):
        outcomes = h.esm_with(emulator_invoker(function)).run_until_drained(60)
        assert all(o.failed == [] for o in outcomes), [
            line for o in outcomes for line in o.result.logs.splitlines() if "record failed" in line
        ]
    fates = h.fates()
    expected: dict[tuple[str, int | None], str] = {(a_ids[0], 0): "fa-1", (a_ids[1], 0): "Q", (a_ids[2], 0): "fa-2",
                                                   (b_ids[0], 0): "fb-1", (b_ids[1], 0): "fb-2"}  # fmt: skip
    assert_partition(fates, expected)
    # Group A's accepted events in order; fa-2 accepted only after the poison was decided
    accepted = [(i, r) for i, r in enumerate(standin.requests) if r.status == 200]
    assert [e for _, r in accepted for e in r.event_ids if e.startswith("fa-")] == ["fa-1", "fa-2"]
    last_poison_test = max(i for i, r in enumerate(standin.requests) if "fa-poison" in r.event_ids)
    assert all(i > last_poison_test for i, r in accepted if "fa-2" in r.event_ids)

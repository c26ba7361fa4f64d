"""The lifecycle soak (local/soak.py, issue 17) at a small size: 300 events through the packaged function under
the RIE, with lost answers, 5xx, hangs, throttles, outages, killed invocations, producer duplicates and
invalid events, then one redrive with Meta healthy. Every invariant of "An event's whole life" must hold.

Marked ``soak`` (and ``e2e``): ``make e2e`` runs it (about 40 s); ``make unit`` / ``make integration`` deselect
the marker. Alone: ``flock /tmp/capi-rie.lock .venv/bin/python -m pytest tests/e2e/test_soak.py -m soak``;
``make soak`` runs the full-size soak and prints the table."""

from __future__ import annotations

import pytest

from local.soak import ARTIFACT_DIR, Config, run

pytestmark = [pytest.mark.e2e, pytest.mark.soak]


def test_every_event_keeps_one_identity_and_one_fate_through_faults_kills_and_a_redrive() -> None:
    if not (ARTIFACT_DIR / "capi_relay" / "handler.py").is_file():
        pytest.fail("the packaged function is missing: run `make build`", pytrace=False)
    # Small batches so that 300 events make enough invocations for outages and kills to happen
    cfg = Config(events=300, seed=17, batch_size=10, p_kill=0.15, p_outage=0.3, drain_timeout_s=300)
    report = run(cfg)
    assert report.ok, "\n".join(f"{name}: {examples}" for name, examples in report.broken.items())

"""The token provider against moto's Secrets Manager over real HTTP (Powertools + botocore, bounded config):
six pixels in one invocation cost one GetSecretValue, a failure is remembered, the next invocation reads
again once the cache has expired."""

from __future__ import annotations

import json
import time

import pytest

from capi_relay.aws.secrets import FetchBounds, SecretError, SecretsManagerTokenProvider, powertools_fetch
from capi_relay.deliver.client import GraphClient
from capi_relay.deliver.engine import Deliverer, DeliveryConfig
from capi_relay.ingest.model import Outbound, encode_event
from local.graph_standin import GraphStandIn
from local.stack import Resources

pytestmark = pytest.mark.integration

PIXELS = [str(100000000000001 + i) for i in range(6)]


class Counting:
    """The real Powertools read, counted."""

    def __init__(self, secret_id: str) -> None:
        self.calls = 0
        self._fetch = powertools_fetch(secret_id, FetchBounds())

    def __call__(self) -> str | bytes:
        self.calls += 1
        return self._fetch()


def test_six_pixels_share_one_secret_fetch_through_the_relay(resources: Resources, standin: GraphStandIn) -> None:
    # Given six pixels reading one secret in moto, and the Graph stand-in
    fetch = Counting(resources.secret_id)
    tokens = SecretsManagerTokenProvider(resources.secret_id, 0, fetch=fetch)  # max_age 0: no cross-call cache
    client = GraphClient(standin.url, "v26.0")
    deliverer = Deliverer(client, tokens, DeliveryConfig(concurrency=4))
    try:
        lead = {"event_name": "Lead", "event_time": int(time.time()), "action_source": "system_generated",
                "user_data": {"em": ["0" * 64]}}  # fmt: skip
        outbound = [Outbound(f"m{i}", 0, pixel, None, encode_event({**lead, "event_id": f"e{i}"}))
                    for i, pixel in enumerate(PIXELS)]  # fmt: skip
        # When one invocation delivers to all six
        report = deliverer.deliver(outbound, time.monotonic() + 20)
        # Then one GetSecretValue served every pixel, and every event reached Graph with the token
        assert report.failed == {}
        assert report.rejected == {}
        assert report.delivered_events == len(PIXELS)
        assert fetch.calls == 1
        assert {r.pixel_id for r in standin.requests} == set(PIXELS)
        assert all(r.authorized and r.status == 200 for r in standin.requests)
        # And the next invocation reads the secret again, once
        deliverer.deliver(outbound, time.monotonic() + 20)
        assert fetch.calls == 2
    finally:
        deliverer.close()


def test_a_missing_secret_is_read_once_per_invocation_and_remembered(resources: Resources) -> None:
    fetch = Counting(resources.secret_id + "-missing")
    tokens = SecretsManagerTokenProvider(resources.secret_id + "-missing", 300, fetch=fetch)
    tokens.begin_invocation(time.monotonic() + 20)
    for pixel in PIXELS:
        with pytest.raises(SecretError) as info:
            tokens.get(pixel)
        assert info.value.reason == "secret_unavailable"
    assert fetch.calls == 1


def test_rotation_is_seen_by_the_one_forced_refresh(resources: Resources) -> None:
    fetch = Counting(resources.secret_id)
    tokens = SecretsManagerTokenProvider(resources.secret_id, 300, fetch=fetch)
    tokens.begin_invocation(time.monotonic() + 20)
    before = tokens.get(PIXELS[0]).access_token
    resources.clients().secretsmanager.put_secret_value(
        SecretId=resources.secret_id, SecretString=json.dumps({"access_token": before + "-rotated"})
    )
    assert tokens.get(PIXELS[1]).access_token == before  # cached
    assert tokens.get(PIXELS[1], force_refresh=True).access_token == before + "-rotated"
    assert tokens.get(PIXELS[2], force_refresh=True).access_token == before + "-rotated"
    assert fetch.calls == 2

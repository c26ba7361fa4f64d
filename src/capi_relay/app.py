"""Composition root: the one place that chooses the concrete outbound I/O (Graph client, token provider, the
relay's own SQS calls for quarantine and parking)."""

from __future__ import annotations

from capi_relay.aws.secrets import SecretsManagerTokenProvider, TokenProvider
from capi_relay.aws.sqs import QueueIO, SqsQueues
from capi_relay.deliver.client import GraphClient
from capi_relay.deliver.engine import Deliverer, DeliveryConfig
from capi_relay.relay import Relay
from capi_relay.settings import Settings


def delivery_config(settings: Settings) -> DeliveryConfig:
    return DeliveryConfig(
        max_events_per_request=settings.max_events_per_request,
        max_request_bytes=settings.max_request_bytes,
        concurrency=settings.http_concurrency,
        max_attempts=settings.max_attempts,
        request_timeout_s=settings.connect_timeout_s + settings.read_timeout_s,
    )


def build_relay(settings: Settings, tokens: TokenProvider | None = None, queues: QueueIO | None = None) -> Relay:
    """The relay with the real Graph client; ``tokens`` defaults to Secrets Manager (benchmarks pass a
    static provider), ``queues`` to boto3 SQS (quarantine to ``DLQ_URL``, parking on the source queue)."""
    client = GraphClient(
        settings.graph_api_url,
        settings.graph_api_version,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        max_connections=settings.http_concurrency,
    )
    if tokens is None:
        tokens = SecretsManagerTokenProvider(settings.access_token_secret_id, settings.secret_max_age_s)
    if queues is None:
        queues = SqsQueues(None, settings.sqs_timeout_s, concurrency=settings.sqs_concurrency)
    return Relay(settings, Deliverer(client, tokens, delivery_config(settings)), queues)

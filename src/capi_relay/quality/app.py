"""Composition root of the quality reader: the Graph client (GET, bounded) and the relay's token provider."""

from __future__ import annotations

from capi_relay.aws.secrets import SecretsManagerTokenProvider, TokenProvider
from capi_relay.deliver.client import GraphClient
from capi_relay.quality.config import QualityConfig
from capi_relay.quality.reader import QualityReader


def build_client(config: QualityConfig) -> GraphClient:
    return GraphClient(
        config.graph_api_url,
        config.graph_api_version,
        connect_timeout_s=config.connect_timeout_s,
        read_timeout_s=config.read_timeout_s,
        max_connections=1,
        max_response_bytes=config.max_response_bytes,
    )


def build_reader(config: QualityConfig, tokens: TokenProvider | None = None) -> QualityReader:
    if tokens is None:
        if config.access_token_secret_id is None:
            raise ValueError("no token provider and no ACCESS_TOKEN_SECRET_ID")
        tokens = SecretsManagerTokenProvider(config.access_token_secret_id, config.secret_max_age_s)
    return QualityReader(build_client(config), tokens, config)

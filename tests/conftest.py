"""Shared fixtures for integration and end-to-end tests (real sockets on loopback, no AWS).

* ``moto_server`` -- one in-process moto server per session; boto3 in this process is pointed at it
  (``AWS_ENDPOINT_URL`` + dummy credentials) for the session.
* ``token`` / ``standin`` -- a fresh fake access token and a Graph API stand-in that accepts it.
* ``resources`` -- queue (redrive to a DLQ after 2 receives, 1 s visibility), DLQ, token secret,
  EventBridge rule and SNS subscription, under a unique name prefix per test.
* ``relay_env`` -- the relay function's environment for those resources and that stand-in.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from local.graph_standin import GraphStandIn
from local.stack import Clients, MotoServer, Resources, aws_env, dummy_token, function_env, provision

MAX_RECEIVE_COUNT = 2


def pytest_sessionstart(session: pytest.Session) -> None:
    """``make unit-compiled`` sets CAPI_RELAY_EXPECT_CORE=compiled and puts the compiled core first on the path: the
    run stops unless every module of the core was loaded from its C extension (never a pure run passed off as it)."""
    expected = os.environ.get("CAPI_RELAY_EXPECT_CORE")
    if expected is None:
        return
    from capi_relay.compiled import core

    if core() != expected:
        pytest.exit(f"CAPI_RELAY_EXPECT_CORE={expected} but this run loaded the {core()} core", returncode=3)


VISIBILITY_TIMEOUT_S = 1


@pytest.fixture(autouse=True)
def _isolated_relay_logging() -> Iterator[None]:
    """Importing ``capi_relay.handler`` gives the ``capi_relay`` loggers the Powertools JSON handler (and
    stops their propagation). Undo that after each test, so tests that read log records from the root
    logger do not depend on the order tests run in."""
    relay_logger = logging.getLogger("capi_relay")
    saved = (list(relay_logger.handlers), relay_logger.level, relay_logger.propagate)
    yield
    relay_logger.handlers[:] = saved[0]
    relay_logger.setLevel(saved[1])
    relay_logger.propagate = saved[2]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer("thread").start()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in aws_env(server.endpoint_url).items():
            mp.setenv(key, value)
        yield server
    server.stop()


@pytest.fixture
def token() -> str:
    return dummy_token()


@pytest.fixture
def standin(token: str) -> Iterator[GraphStandIn]:
    with GraphStandIn(tokens={token}) as server:
        yield server


@pytest.fixture
def resources(moto_server: MotoServer, token: str) -> Resources:
    return provision(
        moto_server.endpoint_url,
        token=token,
        prefix=f"t{uuid.uuid4().hex[:10]}",
        max_receive_count=MAX_RECEIVE_COUNT,
        visibility_timeout_s=VISIBILITY_TIMEOUT_S,
    )


@pytest.fixture
def clients(resources: Resources) -> Clients:
    return resources.clients()


@pytest.fixture
def relay_env(resources: Resources, standin: GraphStandIn) -> dict[str, str]:
    return function_env(resources, standin.url)

"""Security (issue 6): with logging at DEBUG, every sample and every fault kind leave no token, app secret
or raw PII value in any log line, and the token never travels in a URL.

Runs the real handler module (Powertools JSON logs on stdout, capi_relay.* loggers) over moto SQS /
Secrets Manager and the Graph stand-in on loopback, through the SQS event-source emulator. botocore's
own DEBUG wire logging (it prints GetSecretValue responses) is outside the product's log configuration:
Lambda leaves the root logger at WARNING and POWERTOOLS_LOG_LEVEL only governs the relay's loggers.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from local.esm import EventSourceEmulator, in_process_invoker
from local.graph_standin import GraphStandIn
from local.samples import SAMPLES, SAMPLES_BY_NAME, publish, raw_pii_values
from local.stack import MotoServer, dummy_token, function_env, provision
from tests.factories import FakeLambdaContext

pytestmark = pytest.mark.integration
APP_SECRET = "app-secret-" + "5f2b9c1e7d"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("botocore", "boto3")):
            self.lines.append(f"{record.name} {record.getMessage()} {json.dumps(vars(record), default=str)}")


@pytest.fixture
def root_capture() -> Iterator[_Capture]:
    """Everything that reaches the root logger, with urllib3 (the Graph client's HTTP) at DEBUG too."""
    capture = _Capture()
    root, http = logging.getLogger(), logging.getLogger("urllib3")
    old_level = http.level
    root.addHandler(capture)
    http.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    http.setLevel(old_level)


def load_handler(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ModuleType:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Powertools configures a service's logger once per process: when an earlier test built the handler
    # at INFO, a new Logger keeps that level. Start from a clean logger, as a fresh Lambda environment does.
    service_logger = logging.getLogger(env.get("POWERTOOLS_SERVICE_NAME", "capi-relay"))
    service_logger.handlers.clear()
    for attribute in ("init", "powertools_handler"):
        service_logger.__dict__.pop(attribute, None)
    import capi_relay.handler as handler  # the first import runs start() too

    handler.start()  # what INIT does in a fresh execution environment: read and validate the settings
    return handler


def test_debug_logs_hold_no_token_secret_or_raw_pii(
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    root_capture: _Capture,
) -> None:
    # Given a secret with an app secret, the stand-in, and the handler at DEBUG
    token, rotated = dummy_token(), dummy_token()
    with GraphStandIn(tokens={token}) as standin:
        resources = provision(
            moto_server.endpoint_url,
            token=token,
            secret_value=json.dumps({"access_token": token, "app_secret": APP_SECRET}),
            prefix="nologs",
            max_receive_count=2,
            visibility_timeout_s=1,
        )
        clients = resources.clients()
        env = function_env(resources, standin.url, extra={"POWERTOOLS_LOG_LEVEL": "DEBUG", "MAX_ATTEMPTS": "2"})
        handler = load_handler(monkeypatch, env)
        invoke = in_process_invoker(lambda event: handler.lambda_handler(event, FakeLambdaContext(20)))
        esm = EventSourceEmulator(clients.sqs, resources.queue_url, invoke, batch_size=10, window_s=0.2)
        invocation_logs: list[str] = []

        def run(sample: str, setup: Callable[[], Any] | None = None) -> None:
            standin.state.faults.clear()
            if setup is not None:
                setup()
            publish(SAMPLES_BY_NAME[sample], clients, resources)
            invocation_logs.extend(o.result.logs for o in esm.run_until_drained(timeout_s=30))

        # When every sample flows through
        for sample in SAMPLES:
            run(sample.name)
        # ... and every kind of Graph fault hits a PII-carrying event
        faults: list[dict[str, Any]] = [
            {"status": 500, "code": 1},
            {"drop": True},
            {"truncate": True},
            {"html": True},
            {"status": 400, "code": 4},
            {"status": 400, "code": 613},
            {"status": 429, "proxy": True, "retry_after": 0.1},  # a proxy: Graph sends no Retry-After
            {"status": 403, "code": 10, "times": 4},
            {"status": 400, "code": 100, "subcode": 2804036, "times": 4},
        ]
        for fault in faults:
            run("website_purchase", lambda f=fault: standin.add_fault(**f))  # type: ignore[misc]

        def rotate() -> None:
            clients.secretsmanager.put_secret_value(
                SecretId=resources.secret_id,
                SecretString=json.dumps({"access_token": rotated, "app_secret": APP_SECRET}),
            )
            standin.state.tokens = {rotated}

        run("website_purchase", rotate)
        requests = standin.requests

    out = capsys.readouterr()
    logs = "\n".join([out.out, out.err, *invocation_logs, *root_capture.lines])

    # Then the logs are there (the test can see them) ...
    assert '"message":"record delivered"' in logs
    assert '"message":"record failed"' in logs
    assert "access token rejected" in logs
    # ... and hold no token, app secret or raw PII value
    for secret in (token, rotated, APP_SECRET):
        assert secret not in logs
    leaked = sorted(v for v in raw_pii_values() if re.search(rf"(?<![\w@.+-]){re.escape(v)}(?![\w@.-])", logs))
    assert leaked == []
    # and no request carried the token in its URL, while all were authorized by header or refused
    assert requests
    assert not any(r.token_in_url for r in requests)
    assert any(r.appsecret_proof for r in requests)

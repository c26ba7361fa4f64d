"""`capi-relay send` against moto's SQS over real HTTP, as a child process with a minimal environment: the
endpoint comes from ``--endpoint-url`` or from a non-AWS queue URL (no ``AWS_ENDPOINT_URL``), and a queue
that does not exist ends the run at once with one line and exit 3 (no retries, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from local.stack import Clients, MotoServer, drain_queue
from tests.factories import make_event

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def send(args: list[str], events: list[dict[str, object]]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT / "src"), "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "capi_relay", "send", *args, "-"], input="\n".join(map(json.dumps, events)),
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def clients(moto_server: MotoServer) -> Clients:
    return Clients(moto_server.endpoint_url)


@pytest.mark.parametrize("how", ["queue-url-host", "endpoint-url"])
def test_send_reaches_a_local_queue_without_aws_endpoint_url(clients: Clients, how: str) -> None:
    url = clients.sqs.create_queue(QueueName=f"send-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    extra = ["--endpoint-url", clients.endpoint_url] if how == "endpoint-url" else []
    result = send(["--queue-url", url, "--region", "us-east-1", *extra], [make_event(int(time.time()))])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["events_sent"] == 1
    [message] = drain_queue(clients.sqs, url)
    assert json.loads(message["Body"])["data"][0]["event_id"] == "order-1001"


def test_a_queue_that_does_not_exist_fails_at_once_in_one_line(clients: Clients) -> None:
    url = f"{clients.endpoint_url}/123456789012/no-such-queue-{uuid.uuid4().hex[:8]}"
    events = [make_event(int(time.time()), event_id=f"e-{i}") for i in range(3)]
    result = send(["--queue-url", url, "--region", "us-east-1"], events)
    assert result.returncode == 3
    [line] = result.stderr.splitlines()
    assert line.startswith("capi-relay: could not send 3 events: ")
    assert "NonExistentQueue" in line or "QueueDoesNotExist" in line
    summary = json.loads(result.stdout)
    assert summary["calls"] == 1  # not retried: no retry makes the queue exist
    assert summary["events_sent"] == 0

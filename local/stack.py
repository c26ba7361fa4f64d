"""The no-AWS stack: a moto server on loopback and the resources capi-relay needs in it.

* :class:`MotoServer` -- moto as a thread in this process (tests) or as a ``moto.server`` subprocess (demo),
  on a free loopback port (never 9001: the Lambda Runtime Interface Emulator binds it internally).
* :func:`provision` -- the events queue (redrive to a DLQ after ``max_receive_count`` receives, short
  visibility timeout), the DLQ, the access-token secret, an EventBridge rule targeting the queue and an
  SNS topic subscribed to the queue with raw delivery off (the SQS body is the SNS envelope).
* :func:`aws_env` / :func:`function_env` -- the environment for boto3 and for the relay function.

Credentials are dummies: moto accepts anything and nothing here may ever reach AWS.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import boto3

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
EVENT_SOURCE = "capi-relay.demo"  # the EventBridge rule's pattern matches this source
DEMO_PIXEL_ID = "100000000000001"  # fake pixel id (default PIXEL_ID of the local function)
RIE_INTERNAL_PORT = 9001
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (never 9001)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != RIE_INTERNAL_PORT:
            return port
    raise RuntimeError("no free port found")


def dummy_token() -> str:
    """A fresh fake access token for the stand-in (random, so tests can scan logs for it)."""
    return "EAAdummy" + secrets.token_hex(20)


def aws_env(endpoint_url: str, region: str = REGION) -> dict[str, str]:
    """Environment that points boto3 (and the AWS CLI, Powertools ...) at moto with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        **DUMMY_CREDENTIALS,
    }


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # loopback only
                resp.read()
                return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s: {last}")


class MotoServer:
    """moto on ``127.0.0.1``: ``mode="thread"`` (ThreadedMotoServer) or ``mode="process"`` (subprocess)."""

    def __init__(self, mode: Literal["thread", "process"] = "thread", host: str = "127.0.0.1", port: int = 0) -> None:
        self.mode = mode
        self.host = host
        self.port = 0
        self._wanted_port = port  # 0: any free port
        self._thread_server: Any = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        if not self.port:
            raise RuntimeError("moto server not started")
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> MotoServer:
        if self.mode == "thread":
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address=self.host, port=self._wanted_port, verbose=False)
            server.start()
            self._thread_server = server
            self.port = int(server.get_host_and_port()[1])
        else:
            self.port = self._wanted_port or free_port(self.host)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            _wait_http(f"{self.endpoint_url}/moto-api/data.json", timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._thread_server is not None:
            with contextlib.suppress(Exception):
                self._thread_server.stop()
            self._thread_server = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Clients:
    """boto3 clients bound to one endpoint (moto) with dummy credentials."""

    endpoint_url: str
    region: str = REGION
    sqs: SQSClient = field(init=False)
    secretsmanager: SecretsManagerClient = field(init=False)
    events: EventBridgeClient = field(init=False)
    sns: Any = field(init=False)  # boto3-stubs[sns] is not installed

    def __post_init__(self) -> None:
        session = boto3.session.Session(
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=self.region,
        )
        object.__setattr__(self, "sqs", session.client("sqs", endpoint_url=self.endpoint_url))
        object.__setattr__(self, "secretsmanager", session.client("secretsmanager", endpoint_url=self.endpoint_url))
        object.__setattr__(self, "events", session.client("events", endpoint_url=self.endpoint_url))
        object.__setattr__(self, "sns", session.client("sns", endpoint_url=self.endpoint_url))


@dataclass(frozen=True)
class Resources:
    endpoint_url: str
    region: str
    queue_name: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    secret_id: str  # the secret's name (ACCESS_TOKEN_SECRET_ID accepts the name or the ARN)
    secret_arn: str
    event_bus_name: str
    event_source: str
    rule_name: str
    topic_arn: str | None  # None when SNS -> SQS cannot be set up
    max_receive_count: int
    visibility_timeout_s: int

    def clients(self) -> Clients:
        return Clients(self.endpoint_url, self.region)


def provision(
    endpoint_url: str,
    *,
    token: str,
    secret_value: str | None = None,
    prefix: str = "capi-relay",
    max_receive_count: int = 5,
    visibility_timeout_s: int = 2,
    region: str = REGION,
) -> Resources:
    """Create the queue, DLQ, secret, EventBridge rule and SNS subscription; return their ids.

    ``secret_value`` defaults to ``{"access_token": token}``; pass any format ``capi_relay.aws.secrets``
    accepts (bare token, ``{"access_token", "app_secret"}``, ``{"pixels": {...}}``). Use a unique
    ``prefix`` per test to share one moto server between tests.
    """
    clients = Clients(endpoint_url, region)
    sqs = clients.sqs
    dlq_url = sqs.create_queue(QueueName=f"{prefix}-dlq", Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_name = f"{prefix}-events"
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    queue_url = sqs.create_queue(
        QueueName=queue_name,
        Attributes={"VisibilityTimeout": str(visibility_timeout_s), "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    secret_name = f"{prefix}/meta-access-token"
    secret = clients.secretsmanager.create_secret(
        Name=secret_name, SecretString=secret_value if secret_value is not None else json.dumps({"access_token": token})
    )

    # A bus per prefix, so that tests sharing one moto server never deliver into each other's queues.
    bus_name = f"{prefix}-bus"
    clients.events.create_event_bus(Name=bus_name)
    rule_name = f"{prefix}-to-queue"
    clients.events.put_rule(
        Name=rule_name, EventBusName=bus_name, EventPattern=json.dumps({"source": [EVENT_SOURCE]}), State="ENABLED"
    )
    clients.events.put_targets(
        Rule=rule_name, EventBusName=bus_name, Targets=[{"Id": "events-queue", "Arn": queue_arn}]
    )

    topic_arn: str | None
    try:
        topic_arn = str(clients.sns.create_topic(Name=f"{prefix}-topic")["TopicArn"])
        clients.sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "false"}
        )
    except Exception:  # pragma: no cover -- moto supports it today; keep the rest usable if not
        topic_arn = None

    return Resources(
        endpoint_url=endpoint_url,
        region=region,
        queue_name=queue_name,
        queue_url=queue_url,
        queue_arn=queue_arn,
        dlq_url=dlq_url,
        dlq_arn=dlq_arn,
        secret_id=secret_name,
        secret_arn=secret["ARN"],
        event_bus_name=bus_name,
        event_source=EVENT_SOURCE,
        rule_name=rule_name,
        topic_arn=topic_arn,
        max_receive_count=max_receive_count,
        visibility_timeout_s=visibility_timeout_s,
    )


def function_env(
    resources: Resources,
    graph_api_url: str,
    *,
    pixel_id: str = DEMO_PIXEL_ID,
    test_event_code: str | None = None,
    extra: dict[str, str] | None = None,
    quarantine: bool = False,
    park_schedule: str = "off",
) -> dict[str, str]:
    """Environment for the relay function (packaged under the RIE, or built in-process).

    ``quarantine`` sets ``DLQ_URL`` to the DLQ (as the template does); ``park_schedule`` is ``PARK_SCHEDULE``
    (comma-separated seconds; "off" by default, so failed records come back after the test queue's short
    visibility timeout)."""
    env = {
        **aws_env(resources.endpoint_url, resources.region),
        "PIXEL_ID": pixel_id,
        "ACCESS_TOKEN_SECRET_ID": resources.secret_id,
        "GRAPH_API_URL": graph_api_url,
        "GRAPH_API_VERSION": "v26.0",
        "STAGE": "local",
        "POWERTOOLS_SERVICE_NAME": "capi-relay",
        "POWERTOOLS_METRICS_NAMESPACE": "CapiRelayLocal",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_PARAMETERS_MAX_AGE": "300",
        # Short outbound timeouts and a small deadline margin suit a local stand-in.
        "GRAPH_CONNECT_TIMEOUT": "1",
        "GRAPH_READ_TIMEOUT": "3",
        "DEADLINE_MARGIN": "1",
        "MAX_RECEIVE_COUNT": str(resources.max_receive_count),
        "PARK_SCHEDULE": park_schedule,
        "FATE_RESERVE": "1",
        "SQS_TIMEOUT": "1",
    }
    if quarantine:
        env["DLQ_URL"] = resources.dlq_url
    if test_event_code:
        env["TEST_EVENT_CODE"] = test_event_code
    env.update(extra or {})
    return env


def drain_queue(sqs: SQSClient, queue_url: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Receive (and delete) every visible message of ``queue_url`` -- e.g. the DLQ at the end of a run.

    Returns ``{"MessageId", "Body", "Attributes", "MessageAttributes"}`` dicts.
    """
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = resp.get("Messages", [])
        if not messages:
            break
        for message in messages:
            out.append(dict(message))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return out


def os_env_with(env: dict[str, str]) -> dict[str, str]:
    """A copy of ``os.environ`` updated with ``env`` (for subprocesses)."""
    merged = dict(os.environ)
    merged.update(env)
    return merged

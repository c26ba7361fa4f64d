"""The relay's own SQS calls: quarantine sends to the DLQ and visibility changes (parking). I/O only.

:class:`QueueIO` is the small interface the relay depends on (app.py chooses :class:`SqsQueues`; unit tests
pass a fake). Every call is one SQS batch call (<= 10 entries) bounded by the client's connect/read timeouts
with no botocore retries -- a failed call is not lost work: a failed quarantine fails its records (SQS
redelivers them), a failed visibility change leaves the record to the queue's visibility timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from capi_relay.fate.letters import DeadLetter

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

# The command-line tools (`capi-relay send`, `capi-relay dlq`) wait at most this long per SQS call attempt.
CLI_CONNECT_TIMEOUT_S = 5
CLI_READ_TIMEOUT_S = 20  # above ReceiveMessage's WaitTimeSeconds and a 256 KiB SendMessageBatch
CLI_MAX_ATTEMPTS = 3


def cli_sqs_client(*, region: str | None = None, endpoint_url: str | None = None, session: Any = None) -> SQSClient:
    """An SQS client for the command-line tools: bounded connect/read timeouts and attempts (botocore's
    defaults wait 60 s a read, five times). ``region`` / ``endpoint_url`` None: boto3's own resolution
    (``AWS_REGION``, the profile, ``AWS_ENDPOINT_URL``)."""
    import boto3  # noqa: PLC0415 -- only these commands need AWS (``check`` runs without it)
    from botocore.config import Config  # noqa: PLC0415

    config = Config(connect_timeout=CLI_CONNECT_TIMEOUT_S, read_timeout=CLI_READ_TIMEOUT_S,
                    retries={"total_max_attempts": CLI_MAX_ATTEMPTS, "mode": "standard"})  # fmt: skip
    session = session or boto3.session.Session()
    return session.client("sqs", config=config, region_name=region, endpoint_url=endpoint_url)  # type: ignore[no-any-return]


class QueueIO(Protocol):
    def send_dead_letters(self, queue_url: str, letters: Sequence[DeadLetter]) -> set[int]:
        """SendMessageBatch of ``letters`` (<= 10); returns the indexes that were NOT stored. Never raises."""
        ...

    def change_visibility(self, queue_arn: str, changes: Sequence[tuple[str, int]]) -> int:
        """ChangeMessageVisibilityBatch of (receipt handle, seconds) (<= 10); returns how many succeeded.
        Never raises."""
        ...


def queue_url_from_arn(arn: str, endpoint_url: str) -> str | None:
    """``arn:aws:sqs:REGION:ACCOUNT:NAME`` -> ``{endpoint}/ACCOUNT/NAME`` (the client's endpoint decides the
    host: sqs.REGION.amazonaws.com in AWS, the moto server locally). None for anything else."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[4].isdigit() or not parts[5]:
        return None
    return f"{endpoint_url.rstrip('/')}/{parts[4]}/{parts[5]}"


class SqsQueues:
    """:class:`QueueIO` over one boto3 SQS client (created lazily: a relay without quarantine or parking
    never pays for it)."""

    def __init__(self, region: str | None, timeout_s: float, client: SQSClient | None = None, *,
                 concurrency: int = 10) -> None:  # fmt: skip
        self._region = region
        self._timeout_s = timeout_s
        self._client = client
        self._concurrency = concurrency  # the relay's calls run this many at once: one connection each
        self._lock = threading.Lock()

    def _sqs(self) -> SQSClient:
        with self._lock:  # the relay calls from several threads; one client (boto3 clients are thread-safe)
            return self._client or self._create()

    def _create(self) -> SQSClient:
        if self._client is None:
            import boto3  # noqa: PLC0415 -- boto3 is imported on first use only (as secrets.py does)
            from botocore.config import Config  # noqa: PLC0415

            config = Config(
                connect_timeout=max(0.1, self._timeout_s / 2),
                read_timeout=max(0.1, self._timeout_s / 2),
                retries={"total_max_attempts": 1, "mode": "standard"},
                max_pool_connections=max(10, self._concurrency),
            )
            self._client = boto3.client("sqs", region_name=self._region, config=config)
        return self._client

    def send_dead_letters(self, queue_url: str, letters: Sequence[DeadLetter]) -> set[int]:
        entries = [letter.entry(str(i)) for i, letter in enumerate(letters)]
        try:
            resp: Any = self._sqs().send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
        except Exception as exc:  # throttled, access denied, missing queue, timeout: the records fail instead
            logger.error("quarantine send failed", extra={"error": type(exc).__name__, "entries": len(entries),
                                                          "detail": str(exc)[:200]})  # fmt: skip
            return set(range(len(letters)))
        ok = {int(e["Id"]) for e in resp.get("Successful", [])}
        failed = set(range(len(letters))) - ok
        for item in resp.get("Failed", []):
            extra = {"code": item.get("Code"), "sender_fault": item.get("SenderFault"), "detail": item.get("Message")}
            logger.error("quarantine entry refused", extra=extra)
        return failed

    def change_visibility(self, queue_arn: str, changes: Sequence[tuple[str, int]]) -> int:
        try:
            sqs = self._sqs()
            url = queue_url_from_arn(queue_arn, sqs.meta.endpoint_url)
            if url is None:
                logger.warning("not an SQS queue ARN; cannot park", extra={"event_source_arn": queue_arn})
                return 0
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for i, (handle, seconds) in enumerate(changes)
            ]
            resp: Any = sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)  # type: ignore[arg-type]
        except Exception as exc:  # the records simply return after the queue's visibility timeout
            logger.warning("visibility change failed", extra={"error": type(exc).__name__, "detail": str(exc)[:200]})
            return 0
        for item in resp.get("Failed", []):
            logger.warning("visibility change refused", extra={"code": item.get("Code"), "detail": item.get("Message")})
        return len(resp.get("Successful", []))

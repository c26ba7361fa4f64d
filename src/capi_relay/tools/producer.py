"""Producer kit: check events, pack them into ``{"data": [...]}`` messages and send them to the relay's queue.

SQS bills every 64 KiB of payload as one request, and the relay accepts many events per message, so one
event per ``SendMessage`` pays for ~60 times more requests than packed messages do. This module:

1. reads JSON Lines of events, or one message body (:func:`read_input`; an unreadable line is named by line
   and column);
2. runs the relay's own prepare step on them (:func:`capi_relay.tools.preflight.preflight`): rejected events are
   reported and never sent;
3. packs the accepted events **as the producer wrote them** (the relay stays the single normalizer, and a
   producer's own ``event_id`` is kept) into messages of at most ``SQS_MAX_MESSAGE_BYTES`` and
   ``MAX_EVENTS_PER_MESSAGE`` events (:func:`pack`), and groups messages into ``SendMessageBatch`` calls of at
   most 10 entries and ``MAX_CALL_BYTES`` (:func:`plan_calls`);
4. sends each call, retrying the entries SQS failed for a server-side reason with bounded, jittered backoff
   (:class:`Sender`); a sender fault (the request itself is wrong) is reported, not retried.

Events without an ``event_id`` get one from the relay, derived from the pixel and the event's content
(``validate.derived_event_id``): the same in a call sent again after a timeout whose outcome was unknown
(two messages). Two genuinely different events with identical content and no ``event_time`` get one id
(Meta keeps one of them): give every event your own ``event_id``.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO, cast

from capi_relay.ingest.envelope import EnvelopeError, parse_body
from capi_relay.settings import NormalizationSettings, SettingsError
from capi_relay.tools.console import fail, note, read_text
from capi_relay.tools.preflight import Preflight, preflight

SQS_MAX_MESSAGE_BYTES = 256 * 1024  # SQS's message size limit (the relay itself reads bodies up to envelope's cap)
MAX_EVENTS_PER_MESSAGE = 1000  # Meta's events per request: a message never needs more than one POST
MAX_CALL_BYTES = 256 * 1024  # SendMessageBatch: all entries together
MAX_ENTRIES_PER_CALL = 10
MAX_INPUT_BYTES = 512 * 1024 * 1024  # a cap on what one `send` reads
DEFAULT_ATTEMPTS = 5


class InputError(ValueError):
    """The input cannot be read as JSON Lines of events or as one message body."""


@dataclass(frozen=True, slots=True)
class Routing:
    """Request-level values every message carries in its body."""

    pixel_id: str | None = None
    test_event_code: str | None = None
    request_fields: tuple[tuple[str, str], ...] = ()

    def body_fields(self) -> dict[str, str]:
        out = dict(self.request_fields)
        if self.pixel_id:
            out["pixel_id"] = self.pixel_id
        if self.test_event_code:
            out["test_event_code"] = self.test_event_code
        return out


@dataclass(frozen=True, slots=True)
class ProducerInput:
    events: list[Any]
    routing: Routing


def read_input(text: str) -> ProducerInput:
    """One message body (any shape the relay accepts: its routing and request-level fields are kept), or
    JSON Lines with one event per line (blank lines ignored). Raises :class:`InputError`."""
    if not text.strip():
        raise InputError("the input is empty")
    try:
        json.loads(text)
    except json.JSONDecodeError:
        whole = False
    except (ValueError, RecursionError) as exc:
        raise InputError(f"the input is not JSON ({type(exc).__name__})") from None
    else:
        whole = True
    if whole:
        try:
            message = parse_body(text)
        except EnvelopeError as exc:
            raise InputError(f"unreadable message ({exc.reason}): {exc.detail}") from None
        routing = Routing(message.pixel_id, message.test_event_code, message.request_fields)
        return ProducerInput(message.events, routing)
    events: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"line {number} column {exc.colno}: {exc.msg}") from None
        except (ValueError, RecursionError) as exc:
            raise InputError(f"line {number}: not JSON ({type(exc).__name__})") from None
    return ProducerInput(events, Routing())


# ----------------------------------------------------------------------------------------------- packing
@dataclass(frozen=True, slots=True)
class Message:
    body: str
    indexes: tuple[int, ...]  # input index of every event in the message, in order
    size: int  # UTF-8 bytes of body


def _encode(value: Any) -> str:
    """Compact JSON that SQS accepts as a message body: json.dumps escapes control characters; U+FFFE and
    U+FFFF, outside SQS's allowed characters, are escaped too (the JSON means the same)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if "\ufffe" in text or "\uffff" in text:
        text = text.replace("\ufffe", "\\ufffe").replace("\uffff", "\\uffff")
    return text


def pack(
    events: Sequence[tuple[int, dict[str, Any]]],
    routing: Routing,
    *,
    max_bytes: int = SQS_MAX_MESSAGE_BYTES,
    max_events: int = MAX_EVENTS_PER_MESSAGE,
) -> tuple[list[Message], list[dict[str, Any]]]:
    """Greedily pack ``(index, event)`` pairs, in order, into ``{"data": [...], <routing>}`` bodies of at most
    ``max_bytes`` UTF-8 bytes and ``max_events`` events. Returns the messages and ``{"index", "reason"}`` for
    events that cannot be sent as written: ``event_too_large`` (no message fits it), ``invalid_unicode`` (a
    lone surrogate, e.g. in a key the relay would drop) or ``non_finite_number``."""
    head = _encode(routing.body_fields())[:-1]  # '{"pixel_id":"1"' or '{'
    prefix = head + (',"data":[' if head != "{" else '"data":[')
    overhead = len(prefix.encode()) + len(b"]}")
    messages: list[Message] = []
    unsendable: list[dict[str, Any]] = []
    parts: list[str] = []
    indexes: list[int] = []
    size = overhead

    def flush() -> None:
        nonlocal parts, indexes, size
        if parts:
            body = prefix + ",".join(parts) + "]}"
            messages.append(Message(body, tuple(indexes), len(body.encode())))
        parts, indexes, size = [], [], overhead

    for index, event in events:
        try:
            encoded = _encode(event)
            length = len(encoded.encode())
        except UnicodeEncodeError:
            unsendable.append({"index": index, "reason": "invalid_unicode"})
            continue
        except ValueError:
            unsendable.append({"index": index, "reason": "non_finite_number"})
            continue
        if overhead + length > max_bytes:
            unsendable.append({"index": index, "reason": "event_too_large"})
            continue
        if parts and (size + 1 + length > max_bytes or len(parts) >= max_events):
            flush()
        size += length + (1 if parts else 0)
        parts.append(encoded)
        indexes.append(index)
    flush()
    return messages, unsendable


def plan_calls(
    messages: Sequence[Message], *, max_entries: int = MAX_ENTRIES_PER_CALL, max_bytes: int = MAX_CALL_BYTES
) -> list[list[Message]]:
    """Group messages, in order, into SendMessageBatch calls of at most ``max_entries`` and ``max_bytes``."""
    calls: list[list[Message]] = []
    current: list[Message] = []
    total = 0
    for message in messages:
        if current and (len(current) >= max_entries or total + message.size > max_bytes):
            calls.append(current)
            current, total = [], 0
        current.append(message)
        total += message.size
    if current:
        calls.append(current)
    return calls


# ----------------------------------------------------------------------------------------------- sending
# Errors no retry can cure: the queue, the credentials, the region or the endpoint are wrong. botocore has
# already retried connection errors and throttles (queues.CLI_MAX_ATTEMPTS) before an exception reaches us.
FATAL_EXCEPTIONS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "NoRegionError", "EndpointConnectionError",
     "ConnectTimeoutError", "InvalidEndpointError", "ParamValidationError", "SSLError", "UnknownServiceError",
     "ProfileNotFound", "TokenRetrievalError", "SSOTokenLoadError", "UnauthorizedSSOTokenError"}
)  # fmt: skip
FATAL_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
     "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "ExpiredToken",
     "ExpiredTokenException", "InvalidAddress", "InvalidSecurity", "KMS.AccessDeniedException",
     "KmsAccessDenied", "KmsDisabled", "KmsNotFound", "KmsInvalidState", "KmsInvalidKeyUsage",
     "RequestExpired", "AuthFailure", "OptInRequired"}
)  # fmt: skip


def error_code(exc: BaseException) -> str:
    """botocore's error code of a ClientError (``QueueDoesNotExist``), else the exception's class name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str) and code:
            return code
    return type(exc).__name__


def is_fatal(exc: BaseException) -> bool:
    return type(exc).__name__ in FATAL_EXCEPTIONS or error_code(exc) in FATAL_CODES


def describe_error(exc: BaseException) -> str:
    """One line: the error code and botocore's message (which names no secret), cut to 300 characters."""
    text = " ".join(str(exc).split())
    return f"{error_code(exc)}: {text}"[:300]


class BatchSender(Protocol):
    """The one SQS call used (boto3's SQS client satisfies it)."""

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any: ...


@dataclass(slots=True)
class SendReport:
    sent: list[tuple[Message, str]] = field(default_factory=list)  # (message, SQS MessageId)
    failed: list[tuple[Message, str]] = field(default_factory=list)  # (message, error code)
    calls: int = 0
    retries: int = 0
    error: str | None = None  # the fatal error that stopped sending (one line), None if none


class Sender:
    """Sends planned calls; retries the entries SQS failed on its side (``SenderFault`` false) and calls that
    raised, up to ``attempts`` tries per entry with full-jitter exponential backoff (``base_delay_s`` doubling,
    at most ``max_delay_s``)."""

    def __init__(
        self,
        client: BatchSender,
        queue_url: str,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        base_delay_s: float = 0.1,
        max_delay_s: float = 5.0,
        message_group_id: str = "capi-relay",
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._attempts = max(1, attempts)
        self._base = base_delay_s
        self._max = max_delay_s
        self._fifo = queue_url.endswith(".fifo")
        self._group = message_group_id
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter, not security

    def _entry(self, number: int, message: Message) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": str(number), "MessageBody": message.body}
        if self._fifo:
            entry["MessageGroupId"] = self._group
            entry["MessageDeduplicationId"] = hashlib.sha256(message.body.encode()).hexdigest()
        return entry

    def send(self, calls: Sequence[Sequence[Message]]) -> SendReport:
        report = SendReport()
        for call in calls:
            pending = dict(enumerate(call))
            if report.error is not None:  # a fatal error: no later call can succeed, none is tried
                report.failed.extend((m, "not_attempted") for m in pending.values())
                continue
            self._send_call(pending, report)
        return report

    def _send_call(self, pending: dict[int, Message], report: SendReport) -> None:
        """One SendMessageBatch call's messages, retried until each is sent or failed."""
        for attempt in range(self._attempts):
            if attempt:
                report.retries += 1
                self._sleep(self._rng.uniform(0, min(self._max, self._base * 2**attempt)))
            entries = [self._entry(number, message) for number, message in pending.items()]
            report.calls += 1
            last = attempt + 1 == self._attempts
            try:
                response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except Exception as exc:  # botocore has already retried transport errors and throttles
                fatal = is_fatal(exc)  # retrying cannot help: stop here, report, do not try the rest
                if fatal or last:
                    report.failed.extend((m, error_code(exc)) for m in pending.values())
                    report.error = describe_error(exc)
                if fatal:
                    return
                continue
            _settle(response, pending, report)
            if not pending:
                return
            if last:
                report.failed.extend((m, "retries_exhausted") for m in pending.values())


def _settle(response: dict[str, Any], pending: dict[int, Message], report: SendReport) -> None:
    """Move the messages a SendMessageBatch answer settles out of ``pending``: sent, or failed by the sender's
    fault (a failure that is not the sender's stays pending, for the next attempt)."""
    for ok in response.get("Successful", []):
        message = pending.pop(int(ok["Id"]), None)
        if message is not None:
            report.sent.append((message, ok["MessageId"]))
    for failure in response.get("Failed", []):
        number = int(failure["Id"])
        if failure.get("SenderFault") and number in pending:
            report.failed.append((pending.pop(number), failure.get("Code", "SenderFault")))


# ------------------------------------------------------------------------------------------ the whole run
def send_events(
    source: ProducerInput,
    client: BatchSender,
    queue_url: str,
    settings: NormalizationSettings,
    now: int,
    *,
    pixel_id: str | None = None,
    test_event_code: str | None = None,
    sender_options: dict[str, Any] | None = None,
    on_detail: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], int]:
    """Check, pack and send. Returns the JSON summary and the exit code: 0 all sent, 1 something rejected
    (nothing wrong was sent), 3 a message could not be sent (its events are listed under ``failed``).
    ``on_detail`` receives the human-readable reason of each rejection (field names, never values)."""
    routing = Routing(
        pixel_id or source.routing.pixel_id,
        test_event_code or source.routing.test_event_code,
        source.routing.request_fields,
    )
    checked: Preflight = preflight(source.events, settings, now, pixel_id=routing.pixel_id)
    for line in checked.details:
        if on_detail is not None:
            on_detail(line)
    messages, unsendable = pack([(a.index, a.raw) for a in checked.accepted], routing)
    rejected = checked.rejected + unsendable
    report = Sender(client, queue_url, **(sender_options or {})).send(plan_calls(messages))
    summary: dict[str, Any] = {
        "queue_url": queue_url,
        "events_read": len(source.events),
        "events_sent": sum(len(m.indexes) for m, _ in report.sent),
        "messages_sent": len(report.sent),
        "bytes_sent": sum(m.size for m, _ in report.sent),
        "calls": report.calls,
        "retries": report.retries,
        "pixel_id": routing.pixel_id,
        "test_event_code": routing.test_event_code,
        "messages": [
            {"message_id": mid, "events": len(m.indexes), "bytes": m.size, "first_index": m.indexes[0]}
            for m, mid in report.sent
        ],
        "rejected": sorted(rejected, key=lambda r: int(r["index"])),
        "failed": [{"indexes": list(m.indexes), "code": code} for m, code in report.failed],
        "error": report.error,
        "dropped": checked.dropped,
        "warnings": checked.warnings,
    }
    code = 3 if report.failed else (1 if rejected else 0)
    return summary, code


def run_send(args: Any, stdin: TextIO, stdout: TextIO, settings_of: Callable[[Any], NormalizationSettings]) -> int:
    """``capi-relay send``: exit 0 all sent, 1 events rejected (the rest sent), 2 unreadable input or
    configuration, 3 some messages could not be sent. ``settings_of(args)`` gives the normalization settings
    (the command's flags over the environment; ``cli.settings_from_args``); a SettingsError from it exits 2."""
    try:
        text = read_text(args.file, stdin, MAX_INPUT_BYTES)
        if len(text) > MAX_INPUT_BYTES:
            raise InputError(f"the input is larger than {MAX_INPUT_BYTES} characters: split it")
        source = read_input(text)
        settings = settings_of(args)
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read {args.file}: {exc.__class__.__name__}")
    except InputError as exc:
        return fail(f"unreadable input: {exc}")
    except SettingsError as exc:
        return fail(f"configuration error: {exc}")
    try:
        client = cast(BatchSender, sqs_client_for(args.queue_url, args.region, args.endpoint_url))
    except SendSetupError as exc:
        return fail(f"cannot send: {exc}", 3)
    summary, code = send_events(
        source,
        client,
        args.queue_url,
        settings,
        int(time.time()),
        pixel_id=args.pixel_id,
        test_event_code=args.test_event_code,
        sender_options={"message_group_id": args.message_group_id},
        on_detail=note,
    )
    json.dump(summary, stdout, ensure_ascii=False, indent=2)
    stdout.write("\n")
    if summary["failed"]:
        failed = sum(len(f["indexes"]) for f in summary["failed"])
        why = summary["error"] or ", ".join(sorted({f["code"] for f in summary["failed"]}))
        fail(f"could not send {failed} events: {why}")
    return code


# --------------------------------------------------------------------------------- the client for `send`
class SendSetupError(Exception):
    """No region, no credentials or a malformed endpoint: nothing can be sent (one line, no traceback)."""


_AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")


def region_from_queue_url(queue_url: str) -> str | None:
    """``https://sqs.eu-west-1.amazonaws.com/123/q`` (or the legacy ``https://eu-west-1.queue.amazonaws.com``)
    -> ``eu-west-1``; None for any other host (a local endpoint)."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    try:
        host = (urlsplit(queue_url).hostname or "").lower()
    except ValueError:
        return None
    if not host.endswith(_AWS_HOST_SUFFIXES):
        return None
    labels = host.split(".")
    if labels[0] == "sqs" and len(labels) > 2 and labels[1] != "amazonaws":
        return labels[1] if labels[1] != "fips" else None
    if len(labels) > 1 and labels[1] == "queue":
        return labels[0]
    return None


def endpoint_from_queue_url(queue_url: str) -> str | None:
    """The queue URL's scheme and host when it is not an AWS host (a local SQS such as moto), else None."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    try:
        parts = urlsplit(queue_url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if parts.scheme not in {"http", "https"} or not host or host.endswith(_AWS_HOST_SUFFIXES):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def sqs_client_for(queue_url: str, region: str | None, endpoint_url: str | None, session: Any = None) -> Any:
    """The SQS client ``send`` uses. Region: ``--region``, else the queue URL's, else boto3's (``AWS_REGION``,
    ``AWS_DEFAULT_REGION``, the profile). Endpoint: ``--endpoint-url``, else ``AWS_ENDPOINT_URL[_SQS]``, else the
    queue URL's host when it is not AWS's. Fails fast (:class:`SendSetupError`) without a region or
    credentials, instead of botocore's retries and traceback."""
    import os  # noqa: PLC0415

    import boto3  # noqa: PLC0415 -- only `send` needs AWS

    from capi_relay.aws.sqs import cli_sqs_client  # noqa: PLC0415

    try:
        session = session or boto3.session.Session()
        region = region or region_from_queue_url(queue_url) or session.region_name
        if not region:
            raise SendSetupError(
                "no AWS region: pass --region, use the queue URL AWS gives (sqs.<region>.amazonaws.com), "
                "or set AWS_REGION"
            )
        if endpoint_url is None and not (os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")):
            endpoint_url = endpoint_from_queue_url(queue_url)
        if session.get_credentials() is None:
            raise SendSetupError(
                "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "or run `aws configure` / `aws sso login`"
            )
        return cli_sqs_client(region=region, endpoint_url=endpoint_url, session=session)
    except SendSetupError:
        raise
    except Exception as exc:  # botocore: a profile that does not exist, a malformed endpoint, an expired SSO token
        raise SendSetupError(describe_error(exc)) from None

"""``capi-relay check FILE|-``: run one message body through the relay's parse -> normalize -> validate
path and print what would be POSTed, and what gets lost. Needs no AWS settings, secret or network.
``capi-relay send --queue-url URL FILE|-``: check events, then pack and send them to the relay's queue.

check stdout: ``{"data": [events as they would be POSTed], "rejected": [{"index", "reason"}],
"dropped": [{"index", "field", "reason"}], "adjusted": [{"index", "note"}], "warnings": [{"index",
"warning"}], "pixel_id", "test_event_code"}`` plus the request-level fields the message carries.
exit: 0 nothing rejected, 1 something rejected, 2 input unreadable. Diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from capi_relay import dlq
from capi_relay.envelope import MAX_MESSAGE_BYTES, EnvelopeError, parse_body
from capi_relay.graph_versions import version_warning
from capi_relay.preflight import preflight
from capi_relay.settings import DEFAULT_GRAPH_API_VERSION, SettingsError, normalization_settings_from_env


def check(
    body: str,
    now: int | None = None,
    *,
    default_pixel_id: str | None = None,
    default_test_event_code: str | None = None,
) -> tuple[dict[str, Any], int]:
    """Return the check document and the exit code for one message body. Raises EnvelopeError.

    Each ``rejected`` entry is ``{"index", "reason"}`` (the architecture contract); each ``dropped`` entry
    names the field (``event`` with ``key`` for an unknown top-level key) and the reason, never the value.
    The human-readable detail of a rejection goes to stderr in :func:`main`, never to the JSON document.
    ``pixel_id`` / ``test_event_code`` are what the relay would use: the message's, else the defaults
    (the relay's ``PIXEL_ID`` / ``TEST_EVENT_CODE``).
    """
    settings = normalization_settings_from_env()
    message = parse_body(body)
    now = int(time.time()) if now is None else now
    pixel_id = message.pixel_id or default_pixel_id
    result = preflight(message.events, settings, now, pixel_id=pixel_id)
    for line in result.details:
        print(f"capi-relay: {line}", file=sys.stderr)
    warnings = list(result.warnings)
    version = os.environ.get("GRAPH_API_VERSION") or DEFAULT_GRAPH_API_VERSION
    if version_alert := version_warning(version, datetime.fromtimestamp(now, UTC).date()):
        warnings.append(version_alert)  # the relay's Graph API version expires within 90 days
        print(f"capi-relay: GRAPH_API_VERSION {version} expires in {version_alert['days_left']} days", file=sys.stderr)
    document: dict[str, Any] = {
        "pixel_id": pixel_id,
        "test_event_code": message.test_event_code or default_test_event_code,
        **dict(message.request_fields),
        "data": [item.prepared.event for item in result.accepted],
        "rejected": result.rejected,
        "dropped": result.dropped,
        "adjusted": result.adjusted,
        "warnings": warnings,
    }
    return document, result.exit_code


def read_text(path: str, stdin: TextIO, limit: int) -> str:
    """The file (``-``: stdin) as text, at most ``limit`` + 1 characters: enough to tell it is over ``limit``."""
    if path == "-":
        return stdin.read(limit + 1)
    with open(path, encoding="utf-8") as handle:
        return handle.read(limit + 1)


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    parser = argparse.ArgumentParser(prog="capi-relay", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    check_cmd = sub.add_parser("check", help="show what one message body would send, and what it rejects or drops")
    check_cmd.add_argument("file", help="a file holding one SQS message body, or - for standard input")
    dlq.add_parser(sub)
    send_cmd = sub.add_parser("send", help="check events, pack them into <= 256 KiB messages and send them to SQS")
    send_cmd.add_argument("--queue-url", required=True, help="the relay's events queue (stack output EventsQueueUrl)")
    send_cmd.add_argument("--pixel-id", help="pixel (dataset) id for every message (else the relay's PIXEL_ID)")
    send_cmd.add_argument("--test-event-code", help="Events Manager test code for every message")
    send_cmd.add_argument("--message-group-id", default="capi-relay", help="MessageGroupId on a FIFO queue")
    send_cmd.add_argument("file", nargs="?", default="-", help="JSON Lines of events or one message body; - = stdin")
    args = parser.parse_args(argv)
    if args.command == "dlq":
        return dlq.main(args, stdout)
    if args.command == "send":
        from capi_relay.producer import run_send  # noqa: PLC0415 -- boto3 only for send, never for check

        return run_send(args, stdin, stdout)
    try:
        body = read_text(args.file, stdin, MAX_MESSAGE_BYTES)  # parse_body refuses more: message_too_large
        document, code = check(
            body,
            default_pixel_id=os.environ.get("PIXEL_ID") or None,
            default_test_event_code=os.environ.get("TEST_EVENT_CODE") or None,
        )
    except (OSError, UnicodeDecodeError) as exc:
        print(f"capi-relay: cannot read {args.file}: {exc.__class__.__name__}", file=sys.stderr)
        return 2
    except EnvelopeError as exc:
        print(f"capi-relay: unreadable message ({exc.reason}): {exc.detail}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(f"capi-relay: configuration error: {exc}", file=sys.stderr)
        return 2
    json.dump(document, stdout, ensure_ascii=False, indent=2)
    stdout.write("\n")
    return code


if __name__ == "__main__":
    raise SystemExit(main())

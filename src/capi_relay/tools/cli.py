"""``capi-relay check FILE|-``: run one message body through the relay's parse -> normalize -> validate
path and print what would be POSTed, and what gets lost. Needs no AWS settings, secret or network.
``capi-relay send --queue-url URL FILE|-``: check events, then pack and send them to the relay's queue.

check stdout: ``{"data": [events as they would be POSTed], "rejected": [{"index", "reason"}],
"dropped": [{"index", "field", "reason"}], "adjusted": [{"index", "note"}], "warnings": [{"index",
"warning"}], "pixel_id", "test_event_code"}`` plus the request-level fields the message carries.
exit: 0 nothing rejected, 1 something rejected, 2 input unreadable. Diagnostics go to stderr.
``send`` exits 3 when it could not send (no region, no credentials, a queue it cannot reach); errors are one
line on stderr, never a traceback. A closed output pipe (``check ... | head``) ends the command quietly (141).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from typing import Any, TextIO

from capi_relay._compat import UTC
from capi_relay.deliver.versions import version_warning
from capi_relay.ingest.envelope import MAX_MESSAGE_BYTES, EnvelopeError, parse_body
from capi_relay.settings import (
    NormalizationSettings,
    SettingsError,
    check_settings_from_env,
    normalization_settings_from_env,
)
from capi_relay.tools import dlq
from capi_relay.tools import quality as quality_cli
from capi_relay.tools.console import fail, read_text
from capi_relay.tools.explain import all_rejections, ambiguity_warnings, conversions, explain_event
from capi_relay.tools.preflight import preflight


def check(
    body: str,
    now: int | None = None,
    *,
    default_pixel_id: str | None = None,
    default_test_event_code: str | None = None,
    settings: NormalizationSettings | None = None,
    explain: bool = False,
    graph_api_version: str | None = None,
) -> tuple[dict[str, Any], int]:
    """Return the check document and the exit code for one message body. Raises EnvelopeError.

    Each ``rejected`` entry is ``{"index", "reason"}`` (the architecture contract); each ``dropped`` entry
    names the field (``event`` with ``key`` for an unknown top-level key) and the reason, never the value.
    The human-readable detail of a rejection goes to stderr in :func:`main`, never to the JSON document.
    ``pixel_id`` / ``test_event_code`` are what the relay would use: the message's, else the defaults
    (the relay's ``PIXEL_ID`` / ``TEST_EVENT_CODE``). ``graph_api_version``: the relay's ``GRAPH_API_VERSION``
    (read from the environment when None), whose expiry is a warning.
    """
    settings = settings or normalization_settings_from_env()
    message = parse_body(body)
    now = int(time.time()) if now is None else now
    pixel_id = message.pixel_id or default_pixel_id
    result = preflight(message.events, settings, now, pixel_id=pixel_id)
    rejected_at = {int(r["index"]) for r in result.rejected}
    for index in sorted(rejected_at):  # every reason of a rejected event at once, not only the first
        for rejection in all_rejections(message.events[index], settings, now):
            print(f"capi-relay: event {index} rejected: {rejection.reason}: {rejection.detail}", file=sys.stderr)
    for item in result.accepted:
        result.adjusted.extend(
            {"index": item.index, **c} for c in conversions(item.raw, item.prepared.event, item.prepared.notes)
        )
    for index, raw in enumerate(message.events):
        result.warnings.extend({"index": index, **w} for w in ambiguity_warnings(raw, settings, now))
    result.adjusted.sort(key=lambda a: int(a["index"]))
    result.warnings.sort(key=lambda w: -1 if w["index"] is None else int(w["index"]))
    warnings = result.warnings
    version = graph_api_version or check_settings_from_env().graph_api_version
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
    if explain:
        document["explain"] = [explain_event(i, raw, settings, now) for i, raw in enumerate(message.events)]
    return document, result.exit_code


DESCRIPTION = """\
capi-relay: the producer kit of the SQS -> Lambda -> Meta Conversions API relay.

  check FILE   show what one message body would POST to Meta, and what it rejects, drops or converts
  send FILE    check events, pack them into messages of at most 256 KiB and send them to the relay's queue
  dlq          count the dead-letter queue's messages by rejection reason (deletes nothing)
  quality      Meta's Event Match Quality for a pixel (Dataset Quality API), beside a sample's match keys

Exit codes: 0 nothing rejected; 1 some events rejected (the rest were checked or sent); 2 unreadable input
or configuration; 3 send could not send (no region, no credentials, a queue it cannot reach).
"""

CHECK_EPILOG = """\
--explain adds, per event: every rule it breaks (not only the first), each user_data value before and after
normalization with the SHA-256 sent and why it changed, and warnings for values read by a convention (a date
of birth that reads differently day-first and month-first; a national phone number read in the default
region because the event has no country). The values stay on your terminal: the relay never logs them.
"""


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="capi-relay", description=DESCRIPTION, formatter_class=formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{check,send,dlq,quality}")
    check_cmd = sub.add_parser(
        "check", help="show what one message body would send, and what it rejects, drops or converts",
        description="Show what one message body would POST to Meta, and what it rejects, drops or converts. "
        "Needs no AWS account, secret or network.", epilog=CHECK_EPILOG, formatter_class=formatter,
    )  # fmt: skip
    check_cmd.add_argument("file", help="a file holding one SQS message body, or - for standard input")
    check_cmd.add_argument("--explain", action="store_true", help="show each value before hashing and why it changed")
    _normalization_flags(check_cmd)
    dlq.add_parser(sub)
    quality_cli.add_parser(sub)
    send_cmd = sub.add_parser(
        "send", help="check events, pack them into <= 256 KiB messages and send them to SQS",
        description="Check events, pack the accepted ones into messages of at most 256 KiB and send them "
        "to the relay's queue with SendMessageBatch. Needs AWS credentials allowing sqs:SendMessage.",
    )  # fmt: skip
    send_cmd.add_argument("--queue-url", required=True, help="the relay's events queue (stack output EventsQueueUrl)")
    send_cmd.add_argument("--region", help="AWS region (default: from the queue URL, else AWS_REGION or the profile)")
    send_cmd.add_argument(
        "--endpoint-url", help="SQS endpoint, e.g. a local stack (default: AWS_ENDPOINT_URL, else the queue "
        "URL's host when it is not an AWS host)",
    )  # fmt: skip
    send_cmd.add_argument("--pixel-id", help="pixel (dataset) id for every message (else the relay's PIXEL_ID)")
    send_cmd.add_argument("--test-event-code", help="Events Manager test code for every message")
    send_cmd.add_argument("--message-group-id", default="capi-relay", help="MessageGroupId on a FIFO queue")
    send_cmd.add_argument("file", nargs="?", default="-", help="JSON Lines of events or one message body; - = stdin")
    _normalization_flags(send_cmd)
    return parser


def _normalization_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--date-order", type=str.upper, choices=("MDY", "DMY"),
        help="how to read an ambiguous date of birth like 05/03/1990 (default: DATE_ORDER, else MDY); "
        "use the relay's DateOrder setting",
    )  # fmt: skip
    cmd.add_argument(
        "--phone-region", type=str.upper, metavar="CC",
        help="region of national phone numbers in events without country (default: DEFAULT_PHONE_REGION, "
        "else US); use the relay's DefaultPhoneRegion setting",
    )  # fmt: skip


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The relay's environment variables, overridden by ``--date-order`` / ``--phone-region``."""
    env = dict(os.environ)
    if getattr(args, "date_order", None):
        env["DATE_ORDER"] = args.date_order
    if getattr(args, "phone_region", None):
        env["DEFAULT_PHONE_REGION"] = args.phone_region
    return env


def settings_from_args(args: argparse.Namespace) -> NormalizationSettings:
    """The normalization settings of :func:`environment`. Raises SettingsError for a malformed value."""
    return normalization_settings_from_env(environment(args))


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """The ``capi-relay`` command. A closed output pipe (``check ... | head``) ends it quietly with 141."""
    out = stdout or sys.stdout
    try:
        code = _main(argv, stdin or sys.stdin, out)
        out.flush()
    except BrokenPipeError:
        if out is sys.stdout:  # the interpreter flushes stdout again at exit: point it at /dev/null first
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command ended by a closed pipe
    return code


def _main(argv: list[str] | None, stdin: TextIO, stdout: TextIO) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dlq":
        return dlq.main(args, stdout)
    if args.command == "quality":
        return quality_cli.main(args, stdout, stdin, check=check)
    if args.command == "send":
        from capi_relay.tools.producer import run_send  # noqa: PLC0415 -- boto3 only for send, never for check

        return run_send(args, stdin, stdout, settings_from_args)
    try:
        relay = check_settings_from_env(environment(args))  # the relay's variables, read as the relay reads them
        body = read_text(args.file, stdin, MAX_MESSAGE_BYTES)  # parse_body refuses more: message_too_large
        document, code = check(
            body,
            default_pixel_id=relay.pixel_id,
            default_test_event_code=relay.test_event_code,
            settings=relay.normalization,
            explain=args.explain,
            graph_api_version=relay.graph_api_version,
        )
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read {args.file}: {exc.__class__.__name__}")
    except EnvelopeError as exc:
        return fail(f"unreadable message ({exc.reason}): {exc.detail}")
    except SettingsError as exc:
        return fail(f"configuration error: {exc}")
    json.dump(document, stdout, ensure_ascii=False, indent=2)
    stdout.write("\n")
    return code


if __name__ == "__main__":
    raise SystemExit(main())

"""``capi-relay check FILE|-``: run one message body through the relay's parse -> normalize -> validate
path and print what would be POSTed. Needs no AWS settings, secret or network.

stdout: ``{"data": [events as they would be POSTed], "rejected": [{"index": i, "reason": "..."}]}``
exit: 0 nothing rejected, 1 something rejected, 2 input unreadable. Diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from capi_relay import dlq
from capi_relay.envelope import EnvelopeError, parse_body
from capi_relay.model import Rejection
from capi_relay.settings import SettingsError, normalization_settings_from_env
from capi_relay.validate import prepare_event


def check(body: str, now: int | None = None) -> tuple[dict[str, Any], int]:
    """Return the check document and the exit code for one message body. Raises EnvelopeError.

    Each ``rejected`` entry is ``{"index", "reason"}`` (the architecture contract); the human-readable
    detail of a rejection goes to stderr in :func:`main`, never to the JSON document. A missing
    ``event_time`` is defaulted to ``now``, as the relay defaults it to the message's SentTimestamp.
    """
    settings = normalization_settings_from_env()
    message = parse_body(body)
    now = int(time.time()) if now is None else now
    data: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(message.events):
        result = prepare_event(raw, settings, now, default_event_time=now)
        if isinstance(result, Rejection):
            rejected.append({"index": index, "reason": result.reason})
            print(f"capi-relay: event {index} rejected: {result.reason}: {result.detail}", file=sys.stderr)
        else:
            data.append(result.event)
    return {"data": data, "rejected": rejected}, (1 if rejected else 0)


def _read(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read()
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    parser = argparse.ArgumentParser(prog="capi-relay", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    check_cmd = sub.add_parser("check", help="show what one message body would send, and what it rejects")
    check_cmd.add_argument("file", help="a file holding one SQS message body, or - for standard input")
    dlq.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "dlq":
        return dlq.main(args, stdout)
    try:
        body = _read(args.file, stdin)
        document, code = check(body)
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

"""``capi-relay dlq --queue-url URL``: what the DLQ holds, by reason, without deleting anything.

Two kinds of message live in the events DLQ:

* **quarantined** by the relay: one per permanently rejected event (or unreadable body), with the String
  attributes ``rejection_reason``, ``source_message_id``, ``event_index``, ``pixel_id``, ``test_event_code``;
* **moved by SQS** after ``maxReceiveCount`` receives (no ``rejection_reason``): whole records that kept
  failing for a transient reason, or whose quarantine send failed -- the function's ``record failed`` log
  lines with their ``messageId`` say why.

The scan receives messages with a short visibility timeout and hands each one back at once
(``ChangeMessageVisibility`` to 0); it never deletes. It prints a summary by reason and the redrive command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from capi_relay.fate.letters import attribute

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

MOVED_BY_SQS = "(moved by SQS after maxReceiveCount: see the record failed log lines)"


@dataclass
class DlqSummary:
    scanned: int = 0
    approximate_total: int | None = None
    quarantined: Counter[str] = field(default_factory=Counter)  # rejection_reason -> messages
    moved_by_sqs: int = 0
    pixels: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one DLQ messageId


def summarize(messages: list[dict[str, Any]], summary: DlqSummary | None = None) -> DlqSummary:
    """Count ``ReceiveMessage`` entries by reason (pure)."""
    summary = summary or DlqSummary()
    for message in messages:
        summary.scanned += 1
        attrs = message.get("MessageAttributes") or {}
        reason = attribute(attrs, "rejection_reason")
        key = reason if reason is not None else MOVED_BY_SQS
        if reason is None:
            summary.moved_by_sqs += 1
        else:
            summary.quarantined[reason] += 1
        summary.examples.setdefault(key, str(message.get("MessageId")))
        pixel = attribute(attrs, "pixel_id")
        if pixel:
            summary.pixels[pixel] += 1
    return summary


def scan(sqs: SQSClient, queue_url: str, limit: int, hold_s: int = 30) -> DlqSummary:
    """Receive up to ``limit`` messages, count them, make each visible again at once. Deletes nothing."""
    summary = DlqSummary()
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    summary.approximate_total = int(attrs["Attributes"].get("ApproximateNumberOfMessages", "0"))
    seen: set[str] = set()
    handles: list[str] = []
    try:
        while summary.scanned < limit:
            resp = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=min(10, limit - summary.scanned), WaitTimeSeconds=1,
                VisibilityTimeout=hold_s, MessageAttributeNames=["All"],
            )  # fmt: skip
            messages: list[dict[str, Any]] = [dict(m) for m in resp.get("Messages", []) if m["MessageId"] not in seen]
            if not messages:
                break
            seen.update(str(m["MessageId"]) for m in messages)
            handles.extend(str(m["ReceiptHandle"]) for m in messages)
            summarize(messages, summary)
    finally:
        for start in range(0, len(handles), 10):
            entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                       for i, h in enumerate(handles[start : start + 10])]  # fmt: skip
            sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
    return summary


def source_queue_arns(sqs: SQSClient, dlq_url: str) -> list[str]:
    """The queues whose redrive policy names this DLQ (the redrive destination)."""
    urls = sqs.list_dead_letter_source_queues(QueueUrl=dlq_url).get("queueUrls", [])
    return [
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"] for url in urls
    ]


def render(summary: DlqSummary, dlq_arn: str, destinations: list[str]) -> str:
    lines = [f"DLQ {dlq_arn}: ~{summary.approximate_total} messages, {summary.scanned} scanned (nothing deleted)"]
    lines.append("")
    lines.append(f"{'messages':>8}  reason (quarantined by the relay, one message per rejected event or body)")
    for reason, count in summary.quarantined.most_common():
        lines.append(f"{count:>8}  {reason}   e.g. {summary.examples[reason]}")
    if summary.moved_by_sqs:
        lines.append(f"{summary.moved_by_sqs:>8}  {MOVED_BY_SQS}   e.g. {summary.examples[MOVED_BY_SQS]}")
    if summary.pixels:
        lines.append("")
        lines.append("by pixel: " + ", ".join(f"{p} {n}" for p, n in summary.pixels.most_common()))
    lines.append("")
    lines.append("Fix the cause first (the producer's events, the token, the pixel), then move them back:")
    for destination in destinations or ["<events queue arn>"]:
        lines.append(f"  aws sqs start-message-move-task --source-arn {dlq_arn} --destination-arn {destination}")
    return "\n".join(lines)


def main(args: argparse.Namespace, stdout: TextIO | None = None, sqs: SQSClient | None = None) -> int:
    stdout = stdout or sys.stdout
    if sqs is None:
        from capi_relay.aws.sqs import cli_sqs_client  # noqa: PLC0415 -- boto3 only for this command

        sqs = cli_sqs_client()
    try:
        dlq_arn = sqs.get_queue_attributes(QueueUrl=args.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        summary = scan(sqs, args.queue_url, args.max_messages)
        destinations = source_queue_arns(sqs, args.queue_url)
    except Exception as exc:  # botocore errors: no credentials, no such queue, access denied
        print(f"capi-relay dlq: cannot read {args.queue_url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        doc = {"dlq_arn": dlq_arn, "approximate_total": summary.approximate_total, "scanned": summary.scanned,
               "quarantined": dict(summary.quarantined), "moved_by_sqs": summary.moved_by_sqs,
               "redrive_destinations": destinations}  # fmt: skip
        json.dump(doc, stdout, indent=2)
        stdout.write("\n")
    else:
        stdout.write(render(summary, dlq_arn, destinations) + "\n")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``dlq`` on the CLI's subparsers."""
    cmd = sub.add_parser("dlq", help="summarize the DLQ by rejection_reason (deletes nothing) and print the redrive")
    cmd.add_argument("--queue-url", required=True, help="the events DLQ URL (stack output EventsDLQUrl)")
    cmd.add_argument("--max-messages", type=int, default=1000, help="scan at most this many messages (default 1000)")
    cmd.add_argument("--json", action="store_true", help="print the summary as JSON")

"""``capi-relay quality --pixel-id ID [--sample FILE] [--json]``: Meta's view of a pixel's match quality (per
event name: EMQ, match-key coverage, event coverage, dedup, freshness and Meta's recommendations) and, with a
sample of messages, the relay's own match-key coverage for them side by side -- so an operator sees whether a
gap is in the data the relay sends or in Meta's matching.

The token: ``CAPI_RELAY_ACCESS_TOKEN`` (an environment variable, never an argument: argv is visible to every
process) or the relay's secret ``ACCESS_TOKEN_SECRET_ID`` (Secrets Manager). ``GRAPH_API_URL`` /
``GRAPH_API_VERSION`` as for the relay. The sample is one message body, or JSON Lines of message bodies; each
goes through ``capi-relay check`` (parse -> normalize -> validate, exactly what the function would POST).
Exit: 0 read, 1 Meta refused the read (reason on stderr), 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, TextIO

from capi_relay.aws.secrets import Credentials, SecretError, parse_secret
from capi_relay.ingest.envelope import EnvelopeError
from capi_relay.quality.config import quality_config_from_env
from capi_relay.quality.dataset_quality import DatasetQuality, EventQuality
from capi_relay.quality.reasons import WHAT_TO_DO
from capi_relay.settings import SettingsError
from capi_relay.tools.console import fail, read_text

SAMPLE_MAX_BYTES = 64 * 1024 * 1024
SAMPLE_MAX_MESSAGES = 10_000
TOKEN_ENV = "CAPI_RELAY_ACCESS_TOKEN"  # noqa: S105 -- the name of a variable, not a secret

# The relay's user_data keys -> Meta's match-key identifiers in match_key_feedback. Meta's examples show
# email, ip_address, user_agent and external_id; the other names follow Events Manager's labels and are not
# documented by Meta (docs/quality.md): an identifier Meta sends that is not here is shown as it comes.
RELAY_TO_META = {
    "em": "email", "ph": "phone", "external_id": "external_id", "client_ip_address": "ip_address",
    "client_user_agent": "user_agent", "fbc": "click_id", "fbp": "browser_id", "fn": "first_name",
    "ln": "last_name", "db": "date_of_birth", "ge": "gender", "ct": "city", "st": "state", "zp": "zip",
    "country": "country", "fb_login_id": "fb_login_id", "lead_id": "lead_id",
}  # fmt: skip

# ``capi-relay check`` of one message body: its document and exit code (cli.check, passed in by cli).
Check = Callable[[str], tuple[dict[str, Any], int]]


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("quality", help="Meta's match quality for a pixel, beside the relay's own for a sample")
    cmd.add_argument("--pixel-id", required=True, help="the pixel (dataset) id")
    cmd.add_argument("--sample", help="one message body, or JSON Lines of message bodies (- = stdin)")
    cmd.add_argument("--agent-name", help="Meta's agent_name filter (the normalized partner_agent)")
    cmd.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


# ------------------------------------------------------------------------------------------ the sample
def sample_coverage(text: str, check: Check) -> tuple[dict[str, dict[str, Any]], int]:
    """Per event name: events the relay would send and, per Meta identifier, the % that carry the key; and
    how many events (or unreadable messages) the relay would reject."""
    bodies = _bodies(text)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    rejected = 0
    for body in bodies:
        try:
            document, _ = check(body)
        except EnvelopeError:
            rejected += 1
            continue
        rejected += len(document["rejected"])
        for event in document["data"]:
            name = str(event.get("event_name"))
            totals[name] += 1
            user_data = event.get("user_data") if isinstance(event.get("user_data"), dict) else {}
            for key in user_data:
                counts[name][RELAY_TO_META.get(key, key)] += 1
    out: dict[str, dict[str, Any]] = {}
    for name, total in totals.items():
        keys = {k: round(100.0 * n / total, 1) for k, n in sorted(counts[name].items())}
        out[name] = {"events": total, "keys": keys}
    return out, rejected


def _bodies(text: str) -> list[str]:
    stripped = text.strip()
    if not stripped:
        return []
    try:
        json.loads(stripped)
    except ValueError:
        lines = [line for line in stripped.splitlines() if line.strip()]
        return lines[:SAMPLE_MAX_MESSAGES]
    return [stripped]


# ------------------------------------------------------------------------------------------ the report
def _event_doc(event: EventQuality) -> dict[str, Any]:
    return {
        "emq": event.composite_score,
        "keys": dict(sorted(event.match_keys.items(), key=lambda kv: -kv[1])),
        "event_coverage_pct": event.event_coverage_pct,
        "event_coverage_goal_pct": event.event_coverage_goal_pct,
        "dedup_rate_pct": event.dedup_rate_pct,
        "freshness": event.upload_frequency,
        "recommendations": [
            {"name": d.name, "solution": d.solution, "affected_pct": d.percentage} for d in event.diagnostics
        ],
    }


def report(
    pixel_id: str, quality: DatasetQuality, sample: tuple[dict[str, dict[str, Any]], int] | None
) -> dict[str, Any]:
    events: dict[str, Any] = {e.event_name: _event_doc(e) for e in quality.events}
    doc: dict[str, Any] = {"pixel_id": pixel_id, "events": events, "notes": dict(quality.notes)}
    if sample is not None:
        per_event, rejected = sample
        for name, relay in per_event.items():
            events.setdefault(name, {"emq": None, "keys": {}, "recommendations": []})["relay_sample"] = relay
        doc["sample_rejected"] = rejected
    return doc


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:g}%"


def render(doc: dict[str, Any], out: TextIO) -> None:
    out.write(f"pixel {doc['pixel_id']}: Meta's Dataset Quality API")
    out.write(" beside the relay's own coverage for the sample\n" if _has_sample(doc) else "\n")
    for name, event in doc["events"].items():
        emq = event.get("emq")
        out.write(f"\n{name}: EMQ {'-' if emq is None else f'{emq:g}/10'}")
        if event.get("event_coverage_pct") is not None:
            goal = event.get("event_coverage_goal_pct")
            out.write(f"  event coverage {_pct(event['event_coverage_pct'])}" + (f" (goal {goal:g}%)" if goal else ""))
        if event.get("dedup_rate_pct") is not None:
            out.write(f"  dedup {_pct(event['dedup_rate_pct'])}")
        if event.get("freshness"):
            out.write(f"  freshness {event['freshness']}")
        out.write("\n")
        relay = event.get("relay_sample")
        keys = list(dict.fromkeys([*event.get("keys", {}), *(relay["keys"] if relay else {})]))
        if keys:
            out.write(f"  {'match key':<16}{'Meta':>8}" + (f"{'relay sample':>16}" if relay else "") + "\n")
            for key in keys:
                line = f"  {key:<16}{_pct(event.get('keys', {}).get(key)):>8}"
                if relay:
                    line += f"{_pct(relay['keys'].get(key)):>16}"
                out.write(line + "\n")
            if relay:
                out.write(f"  (sample: {relay['events']} events of this name)\n")
        for rec in event.get("recommendations", []):
            affected = f" ({rec['affected_pct']:g}% of events)" if rec.get("affected_pct") is not None else ""
            out.write(f"  Meta recommends: {rec['name']}{affected}. {rec['solution']}\n")
    if doc.get("sample_rejected"):
        out.write(f"\nthe sample also had {doc['sample_rejected']} events or messages the relay would reject\n")


def _has_sample(doc: dict[str, Any]) -> bool:
    return any("relay_sample" in e for e in doc["events"].values())


# ------------------------------------------------------------------------------------------ the command
def _credentials(pixel_id: str, secret_id: str | None) -> Credentials:
    token = os.environ.get(TOKEN_ENV)
    if token:
        return parse_secret(token, pixel_id)
    if not secret_id:
        raise SecretError("secret_unavailable", f"set {TOKEN_ENV} or ACCESS_TOKEN_SECRET_ID")
    from capi_relay.aws.secrets import SecretsManagerTokenProvider  # noqa: PLC0415 -- boto3 only when needed

    return SecretsManagerTokenProvider(secret_id).get(pixel_id)


def main(args: argparse.Namespace, stdout: TextIO, stdin: TextIO | None = None, *, check: Check) -> int:
    from capi_relay.quality.app import build_client  # noqa: PLC0415 -- urllib3 only for this command
    from capi_relay.quality.reader import QualityReader, StaticTokens  # noqa: PLC0415

    env = dict(os.environ)
    env["QUALITY_PIXEL_IDS"] = args.pixel_id
    if args.agent_name:
        env["QUALITY_AGENT_NAME"] = args.agent_name
    try:
        config = quality_config_from_env(env, need_secret=False)
        sample = None
        if args.sample:
            text = read_text(args.sample, stdin or sys.stdin, SAMPLE_MAX_BYTES)
            if len(text) > SAMPLE_MAX_BYTES:
                return fail(f"the sample is larger than {SAMPLE_MAX_BYTES} bytes")
            sample = sample_coverage(text, check)
        credentials = _credentials(args.pixel_id, config.access_token_secret_id)
    except SettingsError as exc:
        return fail(f"configuration error: {exc}")
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read {args.sample}: {exc.__class__.__name__}")
    except SecretError as exc:
        return fail(f"no access token ({exc.reason}): {exc}")
    reader = QualityReader(build_client(config), StaticTokens(credentials), config)
    read = reader.read(args.pixel_id, time.monotonic() + config.read_timeout_s * 3 + config.deadline_margin_s)
    if read.quality is None:
        hint = WHAT_TO_DO.get(read.error or "", "see docs/quality.md")
        return fail(f"Meta did not answer the quality read ({read.error}: {read.detail}); {hint}", 1)
    doc = report(args.pixel_id, read.quality, sample)
    if args.json:
        json.dump(doc, stdout, ensure_ascii=False, indent=2)
        stdout.write("\n")
    else:
        render(doc, stdout)
    return 0

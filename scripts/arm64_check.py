"""The Lambda artifact's aarch64 code against this machine's pure Python, on one corpus (``make arm64-check``).

    python -m scripts.arm64_check [--artifact .aws-sam/build/RelayFunction] [--cache DIR] [--events 300]
        [--seed 11] [--expect-compiled [MOD ...]] [--keep DIR]

Run from the repository root after ``make build``. It writes a corpus (``--events`` website Purchases from
bench/bench_pipeline.py's ``make_purchase`` plus hand-picked edge cases: names in several scripts, phones of
several countries, a lone surrogate, app events with boolean tracking flags, unknown user_data keys, lists of
emails, pre-hashed SHA-256 and MD5 values, events that are rejected), then runs scripts/arm64_artifact_check.py

* on this machine with this Python (the project venv) and ``PYTHONPATH=src``: pure Python;
* in the emulated aarch64 CPython 3.13 (scripts/arm64_python.py) with ``PYTHONPATH=<artifact>``, checking that
  ``platform.machine()`` is aarch64, that orjson is the artifact's aarch64 extension and that each
  ``--expect-compiled`` module loaded from an aarch64 ``.so``;

and fails (exit 1) unless both print byte-identical output. Prints the timings (setup/download, the first
emulated start, the host run, the emulated run), what it compared and which modules loaded compiled.
Timings under emulation say nothing about Lambda's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_pipeline import make_purchase
from scripts.arm64_python import Emulator, SetupError, default_cache, ensure

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "scripts" / "arm64_artifact_check.py"
NOW = 1_790_000_000  # a fixed clock: both runs must see the same events at the same time
RUN_TIMEOUT_S = 1800.0


@dataclass(frozen=True, slots=True)
class Run:
    stdout: bytes
    report: dict[str, Any]
    seconds: float


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _event(**overrides: Any) -> dict[str, Any]:
    """A valid website Purchase; ``user_data=`` etc. replace whole objects, ``ud`` updates user_data."""
    user_data: dict[str, Any] = {
        "em": "jane.doe@example.com", "ph": "(650) 555-1212", "fn": "Jane", "ln": "Doe", "ct": "Menlo Park",
        "st": "CA", "zp": "94025", "country": "US", "external_id": "edge-1", "client_ip_address": "203.0.113.7",
        "client_user_agent": "Mozilla/5.0 (X11; Linux aarch64)", "fbp": "fb.1.1789999000000.1234567890",
    }  # fmt: skip
    user_data.update(overrides.pop("ud", {}))
    event: dict[str, Any] = {
        "event_name": "Purchase", "event_time": NOW - 120, "event_id": "edge", "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout/thanks", "user_data": user_data,
        "custom_data": {"value": 42.5, "currency": "USD"},
    }  # fmt: skip
    event.update(overrides)
    return event


APP_DATA = {"extinfo": ["a2", "com.example.app", "1.0", "1.0", "14.0", "iPhone15,2", "en_US", "PST", "", "390",
                        "844", "2", "6", "256", "120", "America/Los_Angeles"]}  # fmt: skip


def edge_cases() -> list[Any]:
    """Events whose handling depends on Unicode tables, number parsing and JSON encoding: where a compiled
    core or another CPU could differ."""
    phones = [
        ("+44 20 7946 0958", "GB"), ("020 7946 0958", "gb"), ("+49 30 1234567", "DE"), ("+91 98765 43210", "IN"),
        ("+55 11 91234-5678", "BR"), ("(11) 91234-5678", "BR"), ("+33 1 23 45 67 89", "FR"), ("+81 3-1234-5678", "JP"),
        ("03-1234-5678", "JP"), ("+86 10 1234 5678", "CN"), ("+61 2 9374 4000", "AU"), ("+234 803 123 4567", "NG"),
        ("+52 55 1234 5678", "MX"), ("001 650 555 1212", "US"), ("650.555.1212 ext. 12", "US"),
        ("+٩٧١ ٥٠ ١٢٣ ٤٥٦٧", "AE"),
    ]  # fmt: skip
    names = [
        {"fn": "Zoë", "ln": "Müller", "ct": "Zürich", "st": "ZH", "zp": "8001", "country": "CH"},
        {"fn": "太郎", "ln": "山田", "ct": "東京", "st": "13", "zp": "100-0001", "country": "JP"},
        {"fn": "José", "ln": "Nuñez-García", "ct": "São Paulo", "st": "SP", "zp": "01310-100", "country": "BR"},
        {"fn": "Ἀχιλλεύς", "ln": "Παπαδόπουλος", "ct": "Αθήνα", "country": "GR"},
        {"fn": "Fatma", "ln": "Yılmaz", "ct": "İstanbul", "country": "TR"},
        {"fn": "Müller😀", "ln": "O'Brien", "ct": "Dublin", "country": "IE", "zp": "D02 X285"},
        {"fn": "ǅemal", "ln": "STRAẞE", "ct": "Köln", "country": "de", "zp": "50667"},
        {"fn": "Nguyễn", "ln": "Văn A", "ct": "Hà Nội", "country": "VN"},
    ]  # fmt: skip
    cases: list[Any] = [_event(event_id=f"phone-{i}", ud={"ph": ph, "country": c}) for i, (ph, c) in enumerate(phones)]
    cases += [_event(event_id=f"name-{i}", ud=fields) for i, fields in enumerate(names)]
    cases += [
        _event(event_id="surrogate-fn", ud={"fn": "Zo\ud800e"}),
        _event(event_id="surrogate-custom", custom_data={"value": 1, "currency": "EUR", "content_name": "a\udfffb"}),
        _event(event_id="surrogate-\udc80-id"),
        _event(
            event_id="app-bool",
            action_source="app",
            event_source_url=None,
            app_data={"advertiser_tracking_enabled": True, "application_tracking_enabled": False, **APP_DATA},
        ),
        _event(event_id="app-false", action_source="app", app_data={"advertiser_tracking_enabled": False, **APP_DATA}),
        _event(event_id="unknown-keys", ud={"email": "x@example.com", "phone_number": "123", "zz": [1, {"a": None}]}),
        _event(event_id="unknown-top", foo="bar", custom_data={"value": 3, "currency": "usd", "x-y": "z"}),
        _event(event_id="email-list", ud={"em": ["A@Example.COM ", "b@example.org", "", "not-an-email", 7]}),
        _event(event_id="phone-list", ud={"ph": ["+1 650 555 1212", "6505551213", "+44 7700 900123"]}),
        _event(event_id="sha256-email", ud={"em": _sha("jane.doe@example.com")}),
        _event(event_id="sha256-upper", ud={"em": _sha("jane.doe@example.com").upper(), "ph": _sha("16505551212")}),
        _event(event_id="md5-email", ud={"em": hashlib.md5(b"jane.doe@example.com").hexdigest()}),  # noqa: S324
        _event(event_id="dates", ud={"db": "31/12/1990", "ge": "Female"}),
        _event(event_id="date-iso", ud={"db": "1990-02-28", "ge": "m"}),
        _event(event_id="date-bad", ud={"db": "1990-02-30"}),
        _event(event_id="ms-time", event_time=(NOW - 300) * 1000),
        _event(event_id="future", event_time=NOW + 86_400 * 10),
        _event(event_id="old", event_time=NOW - 86_400 * 9),
        _event(
            event_id="numbers",
            custom_data={
                "value": "12.50",
                "currency": "JPY",
                "num_items": 3,
                "contents": [{"id": "a", "quantity": 2, "item_price": 1e-7}],
            },
        ),
        _event(event_id="huge", custom_data={"value": 1.7976931348623157e308, "currency": "USD"}),
        _event(event_id="ipv6", ud={"client_ip_address": "2001:DB8::0:1", "fbc": "fb.1.1789999000000.AbC-_1"}),
        _event(event_id="control", ud={"fn": "a\x00b\u2028c\u200bd", "ct": "\t New\u00a0York \n"}),
        _event(event_id="nfd", ud={"fn": "Zoe\u0308", "ln": "Mu\u0308ller"}),
        _event(event_id="no-user-data", user_data={}),
        _event(event_name="", event_id="empty-name"),
        {"event_name": "Lead"},
        ["not", "an", "object"],
        None,
    ]
    return cases


def corpus(events: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    purchases: list[Any] = [make_purchase(rng, seed * 1_000_000 + i, NOW) for i in range(events)]
    return {"now": NOW, "events": purchases + edge_cases()}


def run_checker(command: list[str], env: dict[str, str], report: Path) -> Run:
    started = time.monotonic()
    try:
        # this script's own commands
        done = subprocess.run(command, env=env, capture_output=True, timeout=RUN_TIMEOUT_S, check=False)  # noqa: S603
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"arm64-check: {command[0]} ran over {RUN_TIMEOUT_S:.0f} s") from exc
    seconds = time.monotonic() - started
    print(done.stderr.decode("utf-8", "replace"), end="", flush=True)  # the checker's summary, in order
    if done.returncode != 0:
        raise SystemExit(f"arm64-check: FAILED: exit {done.returncode}: {' '.join(command)}")
    return Run(done.stdout, json.loads(report.read_text(encoding="utf-8")), seconds)


def host_run(corpus_file: Path, work: Path) -> Run:
    report = work / "host.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONDONTWRITEBYTECODE": "1"}
    env |= {"PYTHONPATH": str(ROOT / "src"), "TZ": "UTC"}
    command = [sys.executable, "-s", str(CHECKER), "--root", str(ROOT / "src"), "--corpus", str(corpus_file)]
    return run_checker([*command, "--report", str(report)], env, report)


def emulated_run(emulator: Emulator, artifact: Path, corpus_file: Path, work: Path, expect: Sequence[str]) -> Run:
    report = work / "arm64.json"
    args = [str(CHECKER), "--root", str(artifact), "--machine", "aarch64", "--corpus", str(corpus_file)]
    args += ["--report", str(report), "--expect-compiled", *expect]
    return run_checker(emulator.command(args), emulator.environment([artifact]), report)


def first_start(emulator: Emulator) -> float:
    """The emulated interpreter starts and reports aarch64 (the smallest thing that can fail)."""
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 -- fixed arguments
        emulator.command(["-c", "import platform; print(platform.machine())"]), env=emulator.environment([]),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip
    if done.returncode != 0 or done.stdout.strip() != "aarch64":
        raise SystemExit(f"arm64-check: FAILED: the emulated python printed {done.stdout!r} {done.stderr[-500:]!r}")
    return time.monotonic() - started


def first_difference(a: bytes, b: bytes) -> str:
    for i, (left, right) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False)):
        if left != right:
            return f"line {i + 1}:\n  host : {left[:600]!r}\n  arm64: {right[:600]!r}"
    return f"one output is a prefix of the other ({len(a.splitlines())} vs {len(b.splitlines())} lines)"


def compare(host: Run, arm: Run) -> list[str]:
    lines = host.stdout.splitlines()
    rejected = sum(1 for line in lines if b'"rejected":' in line)
    report = arm.report
    return [
        f"compared  {len(lines)} events ({len(lines) - rejected} prepared, {rejected} rejected): "
        f"{len(host.stdout)} bytes, sha256 {hashlib.sha256(host.stdout).hexdigest()[:16]}, byte-identical",
        f"host      {host.report['machine']} CPython {host.report['python']}, capi_relay from {host.report['root']}",
        f"emulated  {report['machine']} CPython {report['python']} ({report['ext_suffix']}), "
        f"capi_relay from {report['root']}",
        f"orjson    {report['orjson']}",
        f"modules   {report['modules']} capi_relay modules imported by {', '.join(report['handlers'])}",
        f"compiled  {', '.join(report['compiled']) or 'none (pure Python)'}; "
        f"expected: {', '.join(report['expect_compiled']) or 'none'}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arm64_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=ROOT / ".aws-sam" / "build" / "RelayFunction")
    parser.add_argument("--cache", type=Path, default=None, help=f"emulator cache (default: {default_cache()})")
    parser.add_argument("--events", type=int, default=300, help="generated Purchases (plus the edge cases)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--expect-compiled", nargs="*", default=[], metavar="MOD")
    parser.add_argument("--keep", type=Path, default=None, help="write the corpus and both outputs here")
    args = parser.parse_args(argv)
    artifact = args.artifact.resolve()
    if not (artifact / "capi_relay").is_dir():
        print(f"arm64-check: no capi_relay in {artifact} (run `make build`)", file=sys.stderr)
        return 2
    cache = (args.cache or default_cache()).expanduser().resolve()
    started = time.monotonic()
    try:
        emulator = ensure(cache)
    except SetupError as exc:
        print(f"arm64-check: error: {exc}", file=sys.stderr)
        return 2
    setup_s = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="arm64-check-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus_file = work / "corpus.json"
        corpus_file.write_text(json.dumps(corpus(args.events, args.seed), ensure_ascii=True), encoding="utf-8")
        start_s = first_start(emulator)
        host = host_run(corpus_file, work)
        arm = emulated_run(emulator, artifact, corpus_file, work, args.expect_compiled)
        (work / "host.jsonl").write_bytes(host.stdout)
        (work / "arm64.jsonl").write_bytes(arm.stdout)
    timings = (
        f"timings   setup/download {setup_s:.1f} s (cache {cache}), first emulated start {start_s:.1f} s, "
        f"host run {host.seconds:.1f} s, emulated run {arm.seconds:.1f} s"
    )
    if host.stdout != arm.stdout or not host.stdout:
        print(f"arm64-check: FAILED: the outputs differ, {first_difference(host.stdout, arm.stdout)}")
        print(timings)
        return 1
    print("arm64-check: OK")
    for line in [*compare(host, arm), timings]:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

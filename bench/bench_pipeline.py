"""The whole job side by side (issue 14): the relay's Lambda handler vs Meta's SDK pipeline vs a floor.

    python -m bench.bench_pipeline [--records 10000] [--runs 5] [--shapes single data] [--seed 11]

Every contender gets the same generated records in each run (run k: seed + k; the warm-up a different
set), and each (run, shape, contender) is a fresh subprocess: it imports, runs one warm-up invocation on
other records, then times one invocation with ``time.process_time`` (CPU of the whole process: every
thread) and reports its peak RSS (``VmHWM``, reset when the child starts). Contenders, per run:

* ``handler`` -- ``capi_relay.handler.lambda_handler(event, context)``, imported with the template's
  environment (Powertools Logger + Metrics on, EMF and logs written to stdout, a pipe as in Lambda); the
  access token from Secrets Manager (a moto server in its own process; fetched in the warm-up, cached);
  the Graph API is ``local.graph_standin`` in its own process, so its CPU is not counted;
* ``sdk`` -- what a user would write instead: per record ``json.loads`` of the body, Meta's
  ``facebook-business`` SDK ``UserData`` / ``CustomData`` / ``Event(...)`` and ``Event.normalize()`` (the
  external_id hashed by hand: the SDK sends it as given and the relay hashed, so both do the same work), then per
  1,000 events ``json.dumps({"data": [...]})`` and a urllib3 POST (one keep-alive pool, sequential) to the
  same stand-in;
* ``floor`` -- ``json.loads`` + ``strip().lower()`` + sha256 of the same ten hashed fields + ``json.dumps``
  of each event (stdlib; no rules, no HTTP); ``floor-orjson`` the same with orjson, when installed.

Two shapes: ``single`` is one SQS event of ``--records`` records of one event each; ``data`` is
``--records / 1000`` records whose body is ``{"data": [1,000 events]}`` (how packed producers send).
The records are realistic website Purchases with em, ph, fn, ln, ct, st, zp, country, db, external_id,
client_ip_address, client_user_agent, fbc, fbp and custom_data: distinct people (emails, phones,
external ids, IPs, cookies), names/cities/states/ZIPs/countries repeating as in a US-centred shop,
mixed phone and date formats, ~10 % pre-hashed emails and phones, no invalid values (each contender
does all the work on every event; every event is accepted by the stand-in, which the table checks).

Prints, per shape: µs/event (median [min-max] over the runs), both ratios, peak RSS, failed records and
events the stand-in accepted. Targets (issue 14): handler >= 2x faster than the SDK pipeline, <= 2.5x
the floor, peak RSS <= 128 MB for 10,000 records. Asserts nothing.

Profile (py-spy samples every thread of the child; install it into the venv only for this, it is not a
dev dependency): ``.venv/bin/uv pip install py-spy`` then

    python -m bench.bench_pipeline --profile handler --shapes single [--profile-repeat 5]

which runs the handler child under ``py-spy record -f raw`` (warm-up + 5 timed invocations) and prints
the CPU share per stage (envelope, normalization, encoding, chunk building, HTTP, logging/metrics,
thread hand-offs, ...) and the top functions by self and inclusive samples. ``--profile sdk`` works too.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    PIXEL,
    TOKEN,
    control,
    load_note,
    machine_note,
    peak_rss_mb,
    reset_peak_rss,
    sqs_record,
    standin_process,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET_NAME = "capi-relay/bench-pipeline-token"
EVENTS_PER_REQUEST = 1000
HASHED = ("em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "external_id")
# handler: as it ships, with the compiled core (`make core` builds this machine's build of the C the artifact carries
# for arm64); handler-pure: the same handler on the .py modules (the fallback, and what it was before the core).
CONTENDERS = ("handler", "handler-pure", "sdk", "floor", "floor-orjson")
CORE_DIR = ROOT / "build" / "core-native"
TARGET_VS_SDK = 2.0
TARGET_VS_FLOOR = 2.5
TARGET_RSS_MB = 128.0

# ------------------------------------------------------------------------------------------ records
FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
         "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Carlos", "María",
         "José", "Zoë", "Anne Marie", "Jean-Luc", "Priya", "Wei", "Kenji", "Søren", "Łukasz", "Aisha"]  # fmt: skip
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
        "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Taylor", "Moore", "O'Connor", "Müller",
        "van der Berg", "Nguyen", "Kowalski", "Dupont", "Silva", "Tanaka", "Patel", "Kim", "Chen"]  # fmt: skip
# (city, state as sent, ZIPs, country as sent, phone kind); weights: a US-centred shop
CITIES: list[tuple[str, str, tuple[str, ...], str, str]] = [
    ("New York", "NY", ("10001", "10011", "10025"), "US", "US"),
    ("Los Angeles", "California", ("90012", "90028"), "US", "US"),
    ("Chicago", "IL", ("60601", "60614"), "us", "US"),
    ("Houston", "Texas", ("77002", "77019"), "US", "US"),
    ("Phoenix", "AZ", ("85004",), "US", "US"),
    ("Philadelphia", "PA", ("19103", "19107"), "US", "US"),
    ("San Antonio", "TX", ("78205",), "US", "US"),
    ("San Diego", "CA", ("92101", "92103"), "US", "US"),
    ("Dallas", "TX", ("75201",), "US", "US"),
    ("Austin", "Tex.", ("78701", "78704"), "us", "US"),
    ("San Jose", "CA", ("95113",), "US", "US"),
    ("Seattle", "Washington", ("98101", "98121-4892"), "US", "US"),
    ("Denver", "CO", ("80202",), "US", "US"),
    ("Boston", "MA", ("02108", "02116"), "US", "US"),
    ("Menlo Park", "CA", ("94025-1234", "94025"), "US", "US"),
    ("Miami", "Florida", ("33130",), "US", "US"),
    ("Portland", "Oregon", ("97201",), "US", "US"),
    ("Atlanta", "GA", ("30303",), "US", "US"),
    ("Toronto", "Ontario", ("M5V 2T6",), "CA", "CA"),
    ("Vancouver", "BC", ("V6B 1A1",), "ca", "CA"),
    ("London", "", ("SW1A 1AA", "EC1A 1BB"), "GB", "GB"),
    ("München", "Bayern", ("80331",), "DE", "DE"),
    ("Paris", "Île-de-France", ("75001",), "FR", "FR"),
    ("São Paulo", "SP", ("01310-100",), "BR", "BR"),
]  # fmt: skip
CITY_WEIGHTS = [12, 9, 7, 6, 4, 4, 3, 4, 3, 3, 3, 4, 3, 4, 2, 3, 2, 3, 3, 2, 3, 2, 2, 2]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com", "Example.COM", "aol.com"]
UAS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
    "Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _phone(rng: random.Random, kind: str) -> str:
    if kind in ("US", "CA"):
        area = rng.choice(["212", "310", "312", "415", "512", "617", "650", "206", "303", "416", "604"])
        nxx, line = rng.randint(200, 999), rng.randint(0, 9999)
        form = rng.random()
        if form < 0.35:
            return f"({area}) {nxx}-{line:04d}"
        if form < 0.6:
            return f"{area}-{nxx}-{line:04d}"
        if form < 0.85:
            return f"+1 {area} {nxx} {line:04d}"
        return f"1{area}{nxx}{line:04d}"
    national = {
        "GB": lambda: f"07{rng.randint(100, 999)} {rng.randint(100000, 999999)}",
        "DE": lambda: f"030 {rng.randint(1000000, 9999999)}",
        "FR": lambda: f"06 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        "BR": lambda: f"(11) 9{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
    }[kind]()
    code = {"GB": "44", "DE": "49", "FR": "33", "BR": "55"}[kind]
    if rng.random() < 0.5:
        return national
    digits = "".join(ch for ch in national if ch.isdigit()).lstrip("0")
    return f"+{code} {digits}"


def make_purchase(rng: random.Random, person: int, now: int) -> dict[str, Any]:
    """One website Purchase for a distinct person ``person``."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, state, zips, country, kind = rng.choices(CITIES, CITY_WEIGHTS)[0]
    prehashed = rng.random() < 0.1
    local = f"{first.split()[0].lower()}.{last.split()[-1].lower()}{person}"
    email = f"{local}@{rng.choice(DOMAINS)}"
    phone = _phone(rng, kind)
    born = date(1950, 1, 1) + timedelta(days=rng.randint(0, 20_000))
    db = rng.choice([born.isoformat(), born.strftime("%Y%m%d"), born.strftime("%m/%d/%Y")])
    event_time = now - rng.randint(60, 3 * 86_400)
    user_data: dict[str, Any] = {
        "em": _sha(email.lower()) if prehashed else (f" {email} " if rng.random() < 0.05 else email),
        "ph": _sha("1" + "".join(c for c in phone if c.isdigit())) if prehashed else phone,
        "fn": first,
        "ln": last,
        "ct": city,
        "st": state,
        "zp": rng.choice(zips),
        "country": country,
        "db": db,
        "external_id": f"cust-{person:09d}",
        "client_ip_address": (
            f"2001:db8:{rng.randint(0, 65535):x}::{rng.randint(1, 65535):x}"
            if rng.random() < 0.15
            else f"{rng.choice([24, 68, 73, 98, 172, 203])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
            f"{rng.randint(1, 254)}"
        ),
        "client_user_agent": rng.choice(UAS),
        "fbp": f"fb.1.{(event_time - rng.randint(0, 30 * 86_400)) * 1000 + rng.randint(0, 999)}."
        f"{rng.randint(10**9, 10**10 - 1)}",
    }
    if not state:
        del user_data["st"]  # no state in the address (the SDK would send [null], which Meta refuses)
    if rng.random() < 0.6:
        click = "".join(rng.choices(string.ascii_letters + string.digits + "_-", k=rng.randint(24, 60)))
        user_data["fbc"] = f"fb.1.{(event_time - rng.randint(0, 86_400)) * 1000}.{click}"
    items = rng.randint(1, 4)
    return {
        "event_name": "Purchase",
        "event_time": event_time,
        "event_id": f"order-{person}",
        "action_source": "website",
        "event_source_url": f"https://shop.example.com/checkout/thank-you?order={person}",
        "user_data": user_data,
        "custom_data": {
            "value": round(rng.uniform(5, 400), 2),
            "currency": rng.choice(["USD"] * 8 + ["CAD", "EUR"]),
            "content_ids": [f"sku-{rng.randint(1, 2000):05d}" for _ in range(items)],
            "content_type": "product",
            "num_items": items,
            "order_id": f"A{person:09d}",
        },
    }


def sqs_event(events: int, seed: int, shape: str, now: int) -> dict[str, Any]:
    """The Lambda SQS event: ``events`` purchases, one per record (``single``) or 1,000 per record (``data``).
    People are distinct across seeds (``person = seed * 10**6 + i``)."""
    rng = random.Random(seed)
    purchases = [make_purchase(rng, seed * 1_000_000 + i, now) for i in range(events)]
    sent_ms = str(now * 1000)
    if shape == "single":
        bodies = [json.dumps(p, ensure_ascii=False) for p in purchases]
    else:
        bodies = [
            json.dumps({"data": purchases[i : i + EVENTS_PER_REQUEST]}, ensure_ascii=False)
            for i in range(0, events, EVENTS_PER_REQUEST)
        ]
    return {"Records": [sqs_record(body, sent_ms, "rh-" + uuid.uuid4().hex) for body in bodies]}


# ------------------------------------------------------------------------------------------ contenders
Runner = Callable[[dict[str, Any]], dict[str, int]]


def _events_of(body: Any) -> list[Any]:
    return body["data"] if isinstance(body, dict) and "data" in body else [body]


def _handler_runner(budget_s: float) -> Runner:
    from capi_relay import handler
    from tests.factories import FakeLambdaContext

    def run(event: dict[str, Any]) -> dict[str, int]:
        response = handler.lambda_handler(event, FakeLambdaContext(budget_s))
        return {"failed": len(response.get("batchItemFailures", []))}

    return run


def _sdk_runner(url: str) -> Runner:
    import urllib3
    from facebook_business.adobjects.serverside.action_source import ActionSource
    from facebook_business.adobjects.serverside.custom_data import CustomData
    from facebook_business.adobjects.serverside.event import Event
    from facebook_business.adobjects.serverside.user_data import UserData

    pool = urllib3.PoolManager(maxsize=1, retries=False, timeout=urllib3.Timeout(connect=2, read=30))
    endpoint = f"{url}/v26.0/{PIXEL}/events"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def one(value: Any) -> list[str] | None:
        return None if value is None else [value]

    def hashed_id(value: Any) -> list[str] | None:
        # The SDK sends external_id as given; the relay sends it lowercased and hashed (Meta's param builder
        # does the same): hash it here too (~1 µs, on the SDK), so that both contenders do the same work.
        return None if value is None else [hashlib.sha256(value.lower().encode()).hexdigest()]

    def post(batch: list[dict[str, Any]], counts: Counter[str]) -> None:
        response = pool.request("POST", endpoint, body=json.dumps({"data": batch}).encode(), headers=headers)
        counts["failed" if response.status != 200 else "sent"] += len(batch)

    def run(event: dict[str, Any]) -> dict[str, int]:
        counts: Counter[str] = Counter()
        batch: list[dict[str, Any]] = []
        for record in event["Records"]:
            for raw in _events_of(json.loads(record["body"])):
                u, c = raw["user_data"], raw["custom_data"]
                try:
                    user_data = UserData(
                        emails=one(u.get("em")), phones=one(u.get("ph")), first_names=one(u.get("fn")),
                        last_names=one(u.get("ln")), cities=one(u.get("ct")), states=one(u.get("st")),
                        zip_codes=one(u.get("zp")), country_codes=one(u.get("country")),
                        dates_of_birth=one(u.get("db")), external_ids=hashed_id(u.get("external_id")),
                        client_ip_address=u.get("client_ip_address"), client_user_agent=u.get("client_user_agent"),
                        fbc=u.get("fbc"), fbp=u.get("fbp"),
                    )  # fmt: skip
                    custom_data = CustomData(
                        value=c["value"], currency=c["currency"], content_ids=c["content_ids"],
                        content_type=c["content_type"], num_items=c["num_items"], order_id=c["order_id"],
                    )  # fmt: skip
                    sdk_event = Event(
                        event_name=raw["event_name"], event_time=raw["event_time"], event_id=raw["event_id"],
                        event_source_url=raw["event_source_url"], action_source=ActionSource(raw["action_source"]),
                        user_data=user_data, custom_data=custom_data,
                    )  # fmt: skip
                    batch.append(sdk_event.normalize())
                except (TypeError, ValueError):  # the SDK raises on a value it cannot normalize
                    counts["raised"] += 1
                    continue
                if len(batch) == EVENTS_PER_REQUEST:
                    post(batch, counts)
                    batch = []
        if batch:
            post(batch, counts)
        return {"failed": counts["failed"] + counts["raised"]}

    return run


def _floor_runner(use_orjson: bool) -> Runner:
    loads: Callable[[str], Any]
    dumps: Callable[[Any], Any]
    if use_orjson:
        import orjson

        loads, dumps = orjson.loads, orjson.dumps
    else:
        loads, dumps = json.loads, lambda doc: json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    sha256 = hashlib.sha256

    def run(event: dict[str, Any]) -> dict[str, int]:
        out = []
        for record in event["Records"]:
            for raw in _events_of(loads(record["body"])):
                user_data = raw["user_data"]
                for key in HASHED:
                    value = user_data.get(key)
                    if isinstance(value, str) and value:
                        user_data[key] = sha256(value.strip().lower().encode()).hexdigest()
                out.append(dumps(raw))
        return {"failed": 0}

    return run


# ------------------------------------------------------------------------------------------ child
def _threads_cpu_s() -> float:
    """CPU seconds (user + system) of every thread of this process except the main one (Linux)."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) == os.getpid():
            continue
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


class _GcClock:
    """CPU seconds spent in the cyclic garbage collector (gc.callbacks), to tell it from the code's own work."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.total += time.process_time() - self._started


def child(contender: str, shape: str, events: int, seed: int, url: str, repeat: int) -> dict[str, Any]:
    """Import, warm up on other records, then time ``repeat`` invocations (each on fresh records)."""
    reset_peak_rss()
    runner: Runner
    if contender in ("handler", "handler-pure"):
        from capi_relay.compiled import core

        expected = "compiled" if contender == "handler" else "pure"
        if core() != expected:
            raise SystemExit(f"{contender} loaded the {core()} core, not {expected}: run `make core` first")
        # Lambda's maximum timeout: 10,000 records need a fate-I/O reserve of (1,000 letter calls + 1,000
        # park calls) / SQS_CONCURRENCY 10 x SQS_TIMEOUT 2 s = 400 s before the relay agrees to prepare them
        # (fate.fate_io_reserve_s); with less, it fails every record as deadline_preparing (fail closed).
        runner = _handler_runner(budget_s=900.0)
    elif contender == "sdk":
        runner = _sdk_runner(url)
    else:
        runner = _floor_runner(use_orjson=contender == "floor-orjson")
    now = int(time.time())
    runner(sqs_event(events, seed + 500, shape, now))  # warm-up: other people, same distributions
    control(url, "reset", {})  # the stand-in counts only what the timed invocations deliver
    cpu: list[float] = []
    wall: list[float] = []
    threads: list[float] = []
    collector: list[float] = []
    gc_clock = _GcClock()
    failed = 0
    for i in range(repeat):
        event = sqs_event(events, seed + 1000 * i, shape, now)
        gc.collect()
        cpu0, wall0, threads0, gc0 = time.process_time(), time.perf_counter(), _threads_cpu_s(), gc_clock.total
        outcome = timed_invocation(runner, event)
        wall.append(time.perf_counter() - wall0)
        cpu.append(time.process_time() - cpu0)
        threads.append(_threads_cpu_s() - threads0)
        collector.append(gc_clock.total - gc0)
        failed += outcome["failed"]
        del event
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "threads_cpu_s": threads,
        "gc_cpu_s": collector,
        "failed": failed,
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------------ parent
@contextlib.contextmanager
def moto_secret() -> Iterator[str]:
    """A moto server in its own process holding the access token; yields its endpoint URL."""
    from local.stack import Clients, MotoServer

    moto = MotoServer(mode="process").start(timeout_s=60)  # up to a minute on a loaded machine
    try:
        Clients(moto.endpoint_url).secretsmanager.create_secret(Name=SECRET_NAME, SecretString=TOKEN)
        yield moto.endpoint_url
    finally:
        moto.stop()


def child_env(graph_url: str, moto_url: str, extra: list[str]) -> dict[str, str]:
    """The function's environment from template.yaml (parameter defaults), pointed at the local services."""
    from bench.bench_coldstart import function_env
    from bench.cfn import load_template

    env = dict(os.environ)
    env.update(function_env(load_template()))
    env.update(
        {
            "PIXEL_ID": PIXEL,
            "ACCESS_TOKEN_SECRET_ID": SECRET_NAME,
            "GRAPH_API_URL": graph_url,
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_LAMBDA_FUNCTION_NAME": "capi-relay-RelayFunction",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        }
    )
    env.update(item.partition("=")[::2] for item in extra)
    return env


def _contender_env(env: dict[str, str], contender: str) -> dict[str, str]:
    """The handler as it ships imports the compiled core first (build/core-native holds the package with it)."""
    if contender != "handler":
        return env
    return {**env, "PYTHONPATH": os.pathsep.join([str(CORE_DIR), str(ROOT)])}


def _child_cmd(contender: str, shape: str, events: int, seed: int, url: str, repeat: int) -> list[str]:
    return [sys.executable, "-m", "bench.bench_pipeline", "--child", contender, shape, str(events), str(seed), url,
            str(repeat)]  # fmt: skip


def _state_accepted(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{url}/_standin/state", timeout=60) as resp:
        state = json.loads(resp.read())
    return sum(r["events"] for r in state["requests"] if r["status"] == 200)


def run_child(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {cmd[4:6]} failed:\n{out.stderr[-4000:]}")
    marker = [line for line in out.stdout.splitlines() if line.startswith("@result ")]
    result: dict[str, Any] = json.loads(marker[-1].removeprefix("@result "))
    return result


def _have_orjson() -> bool:
    try:
        import orjson  # noqa: F401
    except ImportError:
        return False
    return True


def _fmt_us(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} [{min(values):.1f}-{max(values):.1f}]"


def measure(args: argparse.Namespace, contenders: list[str]) -> None:
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    accepted: dict[tuple[str, str], list[int]] = {}
    with standin_process() as url, moto_secret() as moto_url:
        env = child_env(url, moto_url, args.env)
        for run in range(args.runs):  # interleaved, so drift on a shared machine hits every contender alike
            for shape in args.shapes:
                for contender in contenders:
                    control(url, "reset", {})
                    cmd = _child_cmd(contender, shape, args.records, args.seed + run, url, 1)
                    result = run_child(cmd, _contender_env(env, contender))
                    results.setdefault((shape, contender), []).append(result)
                    accepted.setdefault((shape, contender), []).append(_state_accepted(url))
                    print(f"  run {run + 1}/{args.runs} {shape:<6} {contender:<12} "
                          f"{result['cpu_s'][0] / args.records * 1e6:7.1f} µs/event", flush=True)  # fmt: skip

    for shape in args.shapes:
        records = args.records if shape == "single" else -(-args.records // EVENTS_PER_REQUEST)
        per = "1 event per record" if shape == "single" else f"{EVENTS_PER_REQUEST} events per record in 'data'"
        print(f"\nshape {shape}: one SQS event of {records} records ({per}), {args.records} events; CPU of the "
              f"process (time.process_time) per event, median [min-max] of {args.runs} runs")  # fmt: skip
        header = (f"  {'contender':<13} {'CPU µs/event':>22} {'wall µs/event':>22} {'peak RSS MB':>20} "
                  f"{'other threads':>13} {'in GC':>6} {'failed':>7} {'accepted':>9}")  # fmt: skip
        print(header)
        print("  " + "-" * (len(header) - 2))
        medians: dict[str, float] = {}
        for contender in contenders:
            runs = results[(shape, contender)]
            cpu = [r["cpu_s"][0] / args.records * 1e6 for r in runs]
            wall = [r["wall_s"][0] / args.records * 1e6 for r in runs]
            rss = [r["peak_rss_mb"] for r in runs]
            medians[contender] = statistics.median(cpu)
            http = contender in ("handler", "handler-pure", "sdk")
            accepted_txt = str(min(accepted[(shape, contender)])) if http else "-"
            threads = statistics.median(r["threads_cpu_s"][0] / r["cpu_s"][0] for r in runs)
            in_gc = statistics.median(r["gc_cpu_s"][0] / r["cpu_s"][0] for r in runs)
            print(f"  {contender:<13} {_fmt_us(cpu):>22} {_fmt_us(wall):>22} "
                  f"{statistics.median(rss):8.0f} [{min(rss):.0f}-{max(rss):.0f}] {threads:>12.1%} {in_gc:>6.0%} "
                  f"{max(r['failed'] for r in runs):>7} {accepted_txt:>9}")  # fmt: skip
        for contender in ("handler", "handler-pure", "sdk"):
            if contender in medians and max(r["failed"] for r in results[(shape, contender)]):
                print(f"  INVALID: {contender} failed records, so its figure is not the cost of delivering them")
        if "floor-orjson" in args.contenders and "floor-orjson" not in contenders:
            print("  floor-orjson  (orjson is not installed: not measured)")
        if "handler" in medians and "sdk" in medians:
            speedup = medians["sdk"] / medians["handler"]
            verdict = "met" if speedup >= TARGET_VS_SDK else "MISSED"
            print(f"  handler vs SDK  : {speedup:.2f}x faster (SDK {medians['sdk']:.1f} / handler "
                  f"{medians['handler']:.1f} µs; target >= {TARGET_VS_SDK:g}x: {verdict})")  # fmt: skip
        if "handler-pure" in medians and "sdk" in medians:
            print(f"  pure handler vs SDK: {medians['sdk'] / medians['handler-pure']:.2f}x (the .py modules: the "
                  "fallback where the core cannot load)")  # fmt: skip
        if "handler" in medians and "floor" in medians:
            for floor in ("floor", "floor-orjson"):
                if floor in medians:
                    ratio = medians["handler"] / medians[floor]
                    verdict = "met" if ratio <= TARGET_VS_FLOOR else "MISSED"
                    print(f"  handler vs {floor:<12}: {ratio:.2f}x slower (target <= {TARGET_VS_FLOOR:g}x: "
                          f"{verdict})")  # fmt: skip
        if "handler" in medians:
            rss = statistics.median(r["peak_rss_mb"] for r in results[(shape, "handler")])
            print(f"  handler peak RSS: {rss:.0f} MB (target <= {TARGET_RSS_MB:.0f} MB: "
                  f"{'met' if rss <= TARGET_RSS_MB else 'MISSED'})")  # fmt: skip


# ------------------------------------------------------------------------------------------ profile
STAGES: list[tuple[str, tuple[str, ...]]] = [
    # (stage, frame markers) -- the innermost frame that matches decides, see _stage()
    ("cyclic GC", ("_GcClock._on_gc",)),  # py-spy shows the collector's time under the gc callback's frame
    ("logging/metrics", ("logging/__init__.py", "aws_lambda_powertools/", "capi_relay/telemetry.py")),
    ("thread hand-offs", ("concurrent/futures/", "threading.py", "queue.py")),
    ("HTTP client (urllib3)", ("capi_relay/deliver/client.py", "urllib3/", "http/client.py", "socket.py", "ssl.py")),
    ("chunk building", ("capi_relay/deliver/chunking.py",)),
    ("encoding (json.dumps)", ("encode_event",)),
    ("normalization", ("capi_relay/prepare/normalize.py", "phonenumbers/")),
    ("validation", ("capi_relay/prepare/events.py",)),
    ("envelope parsing", ("capi_relay/ingest/envelope.py",)),
    ("delivery scheduling", ("capi_relay/deliver/engine.py",)),
    ("relay bookkeeping", ("capi_relay/relay.py", "dataclasses", "capi_relay/ingest/model.py")),
    ("SDK", ("facebook_business/", "pycountry/")),
]


_LINE_RE = re.compile(r":\d+\)$")


def _stage(frames: list[str]) -> str:
    """The stage of one sample (frames outermost first): the innermost frame that names a stage (json.dumps
    under encode_event is encoding, under Powertools it is metrics; json.loads under parse_body is envelope
    parsing; a lock wait under the delivery loop is a thread hand-off)."""
    for frame in reversed(frames):
        for stage, markers in STAGES:
            if any(m in frame for m in markers):
                return stage
    return "other (json, stdlib, interpreter)"


def profile(args: argparse.Namespace) -> None:
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/uv pip install py-spy (venv only, for the profile)")
    shape = args.shapes[0]
    with standin_process() as url, moto_secret() as moto_url, tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        cmd = [py_spy, "record", "--rate", "250", "--format", "raw", "--output", str(raw), "--",
               *_child_cmd(args.profile, shape, args.records, args.seed, url, args.profile_repeat)]  # fmt: skip
        result = run_child(cmd, _contender_env(child_env(url, moto_url, args.env), args.profile))
        lines = raw.read_text(encoding="utf-8").splitlines()
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        stack, _, samples = line.rpartition(" ")
        frames = tuple(_LINE_RE.sub(")", frame) for frame in stack.split(";"))  # per function, not per line
        # Only the main thread's timed invocations (warm-up and record generation excluded). The HTTP worker
        # threads are left out: py-spy counts their blocked waits as samples, while their measured CPU
        # (/proc/self/task, printed below) is a few ms per invocation.
        if any("timed_invocation" in f for f in frames):
            stacks[frames] += int(samples)
    total = sum(stacks.values())
    print(f"profile: py-spy record --rate 250 of the {args.profile} child, shape {shape}, {args.records} events x "
          f"{args.profile_repeat} timed invocations; {total} samples (4 ms each) of the main thread in the timed "
          f"part; CPU of the process {sum(result['cpu_s']):.2f} s, of which other threads "
          f"{sum(result['threads_cpu_s']):.3f} s")  # fmt: skip
    by_stage: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks.items():
        by_stage[_stage(list(frames))] += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print("\n  CPU share by stage:")
    for stage, count in by_stage.most_common():
        print(f"    {stage:<36} {100 * count / total:5.1f} %")
    for title, table in (("self", self_time), ("inclusive", inclusive)):
        print(f"\n  top {args.top} functions by {title} samples:")
        for frame, count in table.most_common(args.top):
            print(f"    {100 * count / total:5.1f} %  {frame}")


def timed_invocation(runner: Runner, event: dict[str, Any]) -> dict[str, int]:
    """Named so that the profile can tell the timed invocations from the warm-up."""
    return runner(event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000, help="events per invocation")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shapes", nargs="+", choices=["single", "data"], default=["single", "data"])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--profile", choices=["handler", "handler-pure", "sdk"],
                        help="profile this contender with py-spy (compiled functions show no Python frames: "
                        "handler-pure shows where the time goes)")  # fmt: skip
    parser.add_argument("--profile-repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--env",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the handler (e.g. HTTP_CONCURRENCY=1 POWERTOOLS_LOG_LEVEL=ERROR)",
    )
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        contender, shape, events, seed, url, repeat = args.child
        print("@result " + json.dumps(child(contender, shape, int(events), int(seed), url, int(repeat))), flush=True)
        return 0
    if args.profile:
        profile(args)
        return 0
    contenders = [c for c in args.contenders if c != "floor-orjson" or _have_orjson()]
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: python -m bench.bench_pipeline {shown}".rstrip())
    print(f"machine: {machine_note()}; orjson {'installed' if _have_orjson() else 'NOT installed'}")
    print(f"inputs : {args.records} generated website Purchases per run (seed {args.seed} + run), fresh subprocess "
          "per (run, shape, contender), one warm-up invocation on other records first; Graph stand-in and moto "
          "(Secrets Manager) in their own processes")  # fmt: skip
    measure(args, contenders)
    print(f"\nat the end: {load_note()}")
    print("note: on a shared machine every figure moves with the load (a busy sibling vCPU slows all code alike);"
          " compare contenders within one run, and read the min as the least disturbed")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

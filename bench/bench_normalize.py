"""Benchmark: normalize + validate + serialize one realistic event, beside Meta's SDK and a floor.

    python -m bench.bench_normalize [--events 10000] [--runs 5] [--seed 7]
    python -m bench.bench_normalize --user-data-only {normalize,pipeline} [--events 10000] [--runs 5]

Per event, each contender starts from the JSON text of the event and ends with the JSON text it would
POST:

* engine  -- json.loads -> capi_relay.prepare.events.prepare_event (normalize, hash, validate) -> json.dumps
* sdk     -- json.loads -> facebook_business UserData/CustomData/Event -> Event.normalize() -> json.dumps
             (an event the SDK raises on is counted as done at the point it raised)
* floor   -- json.loads -> strip/lower/sha256 of the same hashed fields -> json.dumps (no rules at all)

The events are distinct and generated from a seed: a realistic mix (national and international phones,
names with accents, ZIP+4, country names and codes, some values pre-hashed, some invalid). Each run times
every event separately (perf_counter_ns) and takes the median; the table shows the median of the run
medians and the min/max run median over all runs. Also printed: the cold-start import cost the engine
adds (python -X importtime), with and without phonenumbers (imported on the first national phone number).

This prints numbers; it asserts nothing (bench/ is never a timed test).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import platform
import random
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capi_relay.ingest.model import Prepared
from capi_relay.prepare import normalize, rules
from capi_relay.prepare.events import prepare_event
from capi_relay.settings import NormalizationSettings

NOW = 1_790_000_000
SETTINGS = NormalizationSettings()
HASHED = ("em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "external_id")

FIRST = ["John", "Mary", "José", "Zoë", "Jean-Luc", "Anne Marie", "Łukasz", "Søren", "Priya", "Kenji", "Olúwadámilọ́lá"]
LAST = ["Smith", "O'Connor", "García", "Müller", "van der Berg", "Nguyen", "Kowalski", "Dupont", "Silva", "Tanaka"]
# (city, state, country as sent, phone region); weighted toward the US like a typical US-based shop
CITIES = [("Menlo Park", "CA", "us", "US"), ("New York", "New York", "US", "US"), ("Austin", "Tex.", "us", "US"),
          ("Seattle", "Washington", "USA", "US"), ("Boston", "MA", "United States", "US"),
          ("São Paulo", "SP", "Brazil", "BR"), ("London", "", "United Kingdom", "GB"),
          ("Toronto", "Ontario", "CA", "CA"), ("München", "Bayern", "DEU", "DE"),
          ("Paris", "Île-de-France", "France", "FR")]  # fmt: skip
UAS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_NATIONAL = {  # how people in each country write their own number
    "US": lambda r: f"({r.choice(['650', '212', '415', '206', '512'])}) {r.randint(200, 999)}-{r.randint(1000, 9999)}",
    "CA": lambda r: f"{r.choice(['416', '647', '604'])}-{r.randint(200, 999)}-{r.randint(1000, 9999)}",
    "GB": lambda r: f"07{r.randint(100, 999)} {r.randint(100000, 999999)}",
    "DE": lambda r: f"030 {r.randint(1000000, 99999999)}",
    "FR": lambda r: f"06 {r.randint(10, 99)} {r.randint(10, 99)} {r.randint(10, 99)} {r.randint(10, 99)}",
    "BR": lambda r: f"(11) 9{r.randint(1000, 9999)}-{r.randint(1000, 9999)}",
}
_CC = {"US": "1", "CA": "1", "GB": "44", "DE": "49", "FR": "33", "BR": "55"}


def _phone(rng: random.Random, region: str) -> str:
    kind = rng.random()
    national = _NATIONAL[region](rng)
    digits = "".join(ch for ch in national if ch.isdigit()).lstrip("0")
    if kind < 0.55:
        return national
    if kind < 0.75:
        return f"+{_CC[region]} {digits[:3]} {digits[3:]}"  # international form
    if kind < 0.82:
        return f"{_CC[region]}{digits}"  # E.164 digits without +
    if kind < 0.94:
        return _sha(f"{_CC[region]}{digits}")  # pre-hashed
    return rng.choice(["12345", "1-800-FLOWERS", "n/a", ""])  # invalid


def make_events(count: int, seed: int) -> list[str]:
    """``count`` distinct events as JSON text (what arrives in an SQS message body)."""
    rng = random.Random(seed)
    events: list[str] = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, state, country, region = rng.choice(CITIES)
        prehash = rng.random() < 0.15
        email = f"{first.split()[0].lower()}.{last.split()[0].lower()}+{i}@{rng.choice(['gmail.com', 'Example.COM'])}"
        if rng.random() < 0.04:
            email = email.replace("@", " at ")  # invalid
        ip = f"203.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if rng.random() < 0.2:
            ip = f"2001:db8::{rng.randint(1, 65535):x}"
        zp = rng.choice(["94025-1234", "10001", "01310-100", "SW1A 1AA", "M5V 2T6", "80331", "98121 4892"])
        db = rng.choice(["1990-12-31", "2/16/1997", "16.02.1985", "December 5, 1979", "19700101", "13/13/1990"])
        user_data: dict[str, Any] = {
            "em": _sha(email.lower()) if prehash else email,
            "ph": _phone(rng, region),
            "fn": _sha(first.lower()) if prehash else first,
            "ln": last,
            "ct": city,
            "st": state,
            "zp": zp,
            "country": country,
            "db": db,
            "external_id": f"user-{i:07d}" if rng.random() < 0.9 else _sha(f"user-{i}"),
            "client_ip_address": ip,
            "client_user_agent": rng.choice(UAS),
            "fbc": f"fb.1.{(NOW - 3600) * 1000 + i}.IwAR{''.join(rng.choices(string.ascii_letters, k=20))}",
            "fbp": f"fb.1.{(NOW - 86_400) * 1000 + i}.{rng.randint(10**9, 10**10 - 1)}",
        }
        if rng.random() < 0.05:
            user_data["fbc"] = "not-a-cookie"  # invalid
        event = {
            "event_name": "Purchase",
            "event_time": NOW - rng.randint(1, 6 * 86_400),
            "event_id": f"order-{i}",
            "action_source": "website",
            "event_source_url": f"https://shop.example.com/checkout/{i}",
            "user_data": user_data,
            "custom_data": {
                "value": round(rng.uniform(1, 500), 2),
                "currency": rng.choice(["USD", "eur", "GBP"]),
                "content_ids": [f"sku-{rng.randint(1, 999)}" for _ in range(rng.randint(1, 3))],
                "content_type": "product",
                "order_id": f"A{i}",
            },
        }
        events.append(json.dumps(event, ensure_ascii=False))
    return events


# ------------------------------------------------------------------------------------------ contenders
def engine(body: str) -> str:
    result = prepare_event(json.loads(body), SETTINGS, NOW, default_event_time=NOW)
    if isinstance(result, Prepared):
        return json.dumps(result.event, separators=(",", ":"), ensure_ascii=False)
    return result.reason


def floor(body: str) -> str:
    event = json.loads(body)
    user_data = event["user_data"]
    for key in HASHED:
        value = user_data.get(key)
        if isinstance(value, str) and value:
            user_data[key] = hashlib.sha256(value.strip().lower().encode()).hexdigest()
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _list(user_data: dict[str, Any], key: str) -> list[str] | None:
    value = user_data.get(key)
    return None if value is None else [value]


def sdk_events(events: list[str]) -> list[str]:
    """The same events with every value the SDK would raise on removed (decided outside the timing), so
    the SDK runs to completion on every event. It then does strictly less work than the engine: the
    comparison favours the SDK."""
    from facebook_business.adobjects.serverside.normalize import Normalize

    out: list[str] = []
    for body in events:
        event = json.loads(body)
        user_data = event["user_data"]
        for key in HASHED:
            if key not in user_data:
                continue
            try:
                Normalize.normalize_field(key, user_data[key])
            except (TypeError, ValueError):
                del user_data[key]
        out.append(json.dumps(event, ensure_ascii=False))
    return out


def _sdk_builder() -> Callable[[str], str]:
    from facebook_business.adobjects.serverside.action_source import ActionSource
    from facebook_business.adobjects.serverside.custom_data import CustomData
    from facebook_business.adobjects.serverside.event import Event
    from facebook_business.adobjects.serverside.user_data import UserData

    def sdk(body: str) -> str:
        raw = json.loads(body)
        u = raw["user_data"]
        c = raw["custom_data"]
        try:
            user_data = UserData(
                emails=_list(u, "em"), phones=_list(u, "ph"), first_names=_list(u, "fn"),
                last_names=_list(u, "ln"), cities=_list(u, "ct"), states=_list(u, "st"),
                zip_codes=_list(u, "zp"), country_codes=_list(u, "country"), dates_of_birth=_list(u, "db"),
                external_ids=_list(u, "external_id"), client_ip_address=u.get("client_ip_address"),
                client_user_agent=u.get("client_user_agent"), fbc=u.get("fbc"), fbp=u.get("fbp"),
            )  # fmt: skip
            custom_data = CustomData(
                value=c["value"], currency=c["currency"], content_ids=c["content_ids"],
                content_type=c["content_type"], order_id=c["order_id"],
            )  # fmt: skip
            event = Event(
                event_name=raw["event_name"], event_time=raw["event_time"], event_id=raw["event_id"],
                event_source_url=raw["event_source_url"], action_source=ActionSource(raw["action_source"]),
                user_data=user_data, custom_data=custom_data,
            )  # fmt: skip
            return json.dumps(event.normalize(), separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:  # the SDK raises on a value it cannot normalize
            return type(exc).__name__

    return sdk


# ------------------------------------------------------------------------------------------ measuring
def time_run(fn: Callable[[str], str], events: list[str]) -> float:
    """Median µs per event over one pass."""
    clock = time.perf_counter_ns
    samples = [0] * len(events)
    gc.collect()
    gc.disable()
    try:
        for i, body in enumerate(events):
            start = clock()
            fn(body)
            samples[i] = clock() - start
    finally:
        gc.enable()
    return statistics.median(samples) / 1000


def import_cost(statement: str) -> tuple[float, list[tuple[str, float]]]:
    """Milliseconds ``statement``'s imports add in a fresh interpreter (sum of top-level cumulative times
    from ``python -X importtime``), and where they go: the engine's own modules (self time of
    ``capi_relay.*``), ``phonenumbers`` (cumulative) and the stdlib modules pulled in (the rest)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    )
    total = own = phone = 0.0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_part, cumulative, name = line.split("|", 2)
        self_ms = int(self_part.removeprefix("import time:")) / 1000
        module = name.strip()
        if module.startswith("capi_relay"):
            own += self_ms
        if module == "phonenumbers":
            phone += int(cumulative) / 1000
        if not name[1:].startswith(" "):  # "| " then two spaces per nesting level: top level only
            total += int(cumulative) / 1000
    return total, [("capi_relay.* own code", own), ("phonenumbers", phone)]


# Adversarial inputs (issue 11): long runs that made the old phone extension regex quadratic, and their cousins.
ADVERSARIAL_UNITS = [" ", "1", "1 ", "+", "-", "(", ".", "x", "#", "&", "\u0301", "\ufe0f", "😀", "12/", "dd/", "年"]
ADVERSARIAL_LENGTH = 100_000


def _engine_no_memo(body: str) -> str:
    normalize.clear_memo()  # every event starts with an empty memo: the cost without memoization
    return engine(body)


def _best_us(call: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls, in µs: the input's cost without the preemptions of a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        with contextlib.suppress(rules.Invalid):
            call()
        best = min(best, (time.perf_counter_ns() - start) / 1000)
    return best


def adversarial(repeats: int = 2) -> list[tuple[str, float, str, float]]:
    """Per field: (field, worst µs of the bare rule over the 100 k-character inputs -- each input's best of
    ``repeats`` --, the unit of that input, the same for the pipeline, which applies the caps first)."""
    ctx = rules._Ctx(SETTINGS, "us", datetime.now(UTC).date())
    today = ctx.today
    rows = []
    for field, rule in sorted(rules._RULES.items()):
        worst_rule, worst_unit, worst_pipe = 0.0, "", 0.0
        for unit in ADVERSARIAL_UNITS:
            long_run = unit * (ADVERSARIAL_LENGTH // len(unit))
            for value in ("1" + long_run + "2", long_run):
                elapsed = _best_us(lambda v=value, r=rule: r(v, ctx), repeats)  # type: ignore[misc]
                if elapsed > worst_rule:
                    worst_rule, worst_unit = elapsed, unit
                user_data = {field: value}
                worst_pipe = max(worst_pipe, _best_us(lambda u=user_data: normalize.normalize_user_data(
                    u, SETTINGS, today), repeats))  # type: ignore[misc]  # fmt: skip
        rows.append((field, worst_rule, worst_unit, worst_pipe))
    return rows


def _best_of(statement: str, repeats: int = 5) -> tuple[float, list[tuple[str, float]]]:
    return min((import_cost(statement) for _ in range(repeats)), key=lambda item: item[0])


def user_data_only(count: int, seed: int, runs: int, source: str) -> tuple[float, float]:
    """``normalize_user_data`` alone: CPU time (process_time, so a shared machine's preemptions do not count) of
    one pass over ``count`` events' ``user_data``, the memo cleared first as each invocation does; (min, median)
    µs/event of ``runs`` passes after a warm-up pass. ``source``: this module's events or bench_pipeline's
    purchases (more US, distinct dates of birth)."""
    if source == "pipeline":
        from bench.bench_pipeline import make_purchase  # only for this mode

        rng = random.Random(seed)
        users = [make_purchase(rng, seed * 1_000_000 + i, NOW)["user_data"] for i in range(count)]
    else:
        users = [json.loads(body)["user_data"] for body in make_events(count, seed)]
    today = datetime.fromtimestamp(NOW, UTC).date()
    passes = []
    for _ in range(runs + 1):
        normalize.clear_memo()
        start = time.process_time_ns()
        for user_data in users:
            normalize.normalize_user_data(user_data, SETTINGS, today, [])
        passes.append((time.process_time_ns() - start) / count / 1000)
    timed = sorted(passes[1:])
    return timed[0], statistics.median(timed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_normalize", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--user-data-only",
        choices=["normalize", "pipeline"],
        help="time normalize_user_data alone over these events (or bench_pipeline's) and exit",
    )
    args = parser.parse_args(argv)
    if args.user_data_only:
        fastest, middle = user_data_only(args.events, args.seed, args.runs, args.user_data_only)
        print(f"normalize_user_data alone ({args.user_data_only} events, {args.events}, CPU time, {args.runs} passes):"
              f" min {fastest:.2f} median {middle:.2f} µs/event")  # fmt: skip
        return 0

    events = make_events(args.events, args.seed)
    inputs = {"engine": events, "no-memo": events, "sdk": sdk_events(events), "floor": events}
    sdk_removed = sum(e.count('"') for e in events) - sum(e.count('"') for e in inputs["sdk"])
    contenders: dict[str, Callable[[str], str]] = {
        "engine": engine,
        "no-memo": _engine_no_memo,
        "sdk": _sdk_builder(),
        "floor": floor,
    }
    outcomes = {name: [fn(body) for body in inputs[name]] for name, fn in contenders.items()}  # warm-up + sanity
    rejected = sum(1 for o in outcomes["engine"] if not o.startswith("{"))
    sdk_raised = sum(1 for o in outcomes["sdk"] if not o.startswith("{"))

    medians: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.runs):
        for name, fn in contenders.items():  # interleaved, so drift hits every contender alike
            # Every run starts with a cold value memo, as each invocation does (the relay calls clear_memo()):
            # only repeats *within* the events (shared countries, states, cities...) are served from it.
            normalize.clear_memo()
            medians[name].append(time_run(fn, inputs[name]))

    print(f"command : python -m bench.bench_normalize --events {args.events} --runs {args.runs} --seed {args.seed}")
    print(f"inputs  : {len(events)} distinct generated website Purchase events (seed {args.seed}), "
          f"{sum(len(e) for e in events) // len(events)} bytes of JSON on average; "
          f"engine rejected {rejected}, SDK raised on {sdk_raised}; "
          f"the SDK's copy lacks the ~{sdk_removed // 4} values it would raise on")  # fmt: skip
    print(f"machine : nproc={os.cpu_count()}, Python {platform.python_version()} ({platform.machine()}, "
          f"{platform.system()})")  # fmt: skip
    print()
    print(f"{'contender':<10} {'median µs/event':>16} {'min run':>9} {'max run':>9} {'vs engine':>10}")
    mid = {name: statistics.median(values) for name, values in medians.items()}
    for name, values in medians.items():
        ratio = mid[name] / mid["engine"]
        print(f"{name:<10} {mid[name]:>16.1f} {min(values):>9.1f} {max(values):>9.1f} {ratio:>9.2f}x")
    print()
    speedup = mid["sdk"] / mid["engine"]
    overhead = mid["engine"] / mid["floor"]
    print(f"engine vs SDK   : {speedup:.2f}x faster   (target >= 3x: {'met' if speedup >= 3 else 'MISSED'})")
    print(f"engine vs floor : {overhead:.2f}x slower   (target <= 3x: {'met' if overhead <= 3 else 'MISSED'})")
    print()
    base, _ = _best_of("pass")
    print("cold-start imports (python -X importtime, best of 5, ms; the bare interpreter's imports subtracted):")
    pkg, tables = "capi_relay.prepare.events", "capi_relay.prepare._tables"
    for label, statement in [
        ("import capi_relay.prepare.events", "import capi_relay.prepare.events"),
        ("+ _countries (first country/currency)", f"import {pkg}, {tables}.countries"),
        ("+ phonenumbers (first national phone)", f"import {pkg}, {tables}.countries, phonenumbers"),
        ("+ _country_names (first CLDR name)", f"import {events}, {tables}.countries, {tables}.country_names"),
    ]:  # fmt: skip
        total, parts = _best_of(statement)
        print(f"  {label:<40}: {total - base:6.1f}  ({', '.join(f'{n} {ms:.1f}' for n, ms in parts)})")
    package = Path(normalize.__file__).parent
    sizes = {
        name: (package / name).stat().st_size
        for name in ("_tables/countries.py", "_tables/country_names.py", "_tables/date_orders.py")
    }
    print("generated tables in the artifact (source bytes): " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    print()
    normalize.clear_memo()
    for body in events:
        engine(body)
    print(f"memo: no-memo / engine = {mid['no-memo'] / mid['engine']:.2f}x per event (a per-invocation memo of values "
          f"<= {normalize.MEMO_MAX_VALUE_CHARS} chars, <= {normalize.MEMO_MAX_BYTES // 1024} KiB); after one run: "
          f"{normalize.memo_size()[0]} entries, ~{normalize.memo_size()[1] // 1024} KiB")  # fmt: skip
    print()
    print(
        f"adversarial inputs ({ADVERSARIAL_LENGTH:,}-character runs of {len(ADVERSARIAL_UNITS)} units; worst "
        "input, each input's best of 2 calls; the pipeline drops a value over its cap, MAX_CHARS, before any rule):"
    )
    print(f"  {'field':<12} {'bare rule worst µs':>19} {'(run of)':>9} {'pipeline worst µs':>18} {'cap':>6}")
    for field, worst_rule, unit, worst_pipe in adversarial():
        print(f"  {field:<12} {worst_rule:>19.0f} {unit!r:>9} {worst_pipe:>18.1f} {normalize.MAX_CHARS[field]:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A/B benchmark of the relay around normalization: another revision's ``src/`` against this tree's, interleaved.

    python -m bench.ab_relay --old-rev HEAD~1 [--rounds 4] [--records 10000]

Each round runs, once in a fresh interpreter per side (alternating which side goes first, so a shared
machine's load falls on both alike), ``Relay.process`` in-process over bench_pipeline's generated SQS event
(shapes ``single`` and ``data``) with a Graph sender that accepts every event without HTTP, the function's
template settings and no SQS calls (a healthy batch makes none). Two figures per shape: ``full`` (the whole
relay) and ``rest`` (normalization replaced by a copy of ``user_data``: parse, identity, validation,
encoding, ledger, chunking, decisions and the response -- what issue 21 item 1 counts "outside
normalization"). CPU of the process (``time.process_time``, every thread) per event, the fastest of three
invocations after a warm-up. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import gc, json, time
from bench.bench_coldstart import function_env
from bench.bench_pipeline import sqs_event
from bench.cfn import load_template
from bench.common import PIXEL, StaticTokens
from capi_relay.prepare import events as validate
from capi_relay.app import delivery_config
from capi_relay.deliver.engine import Deliverer
from capi_relay.deliver.client import GraphReply
from capi_relay.relay import Relay
from capi_relay.settings import settings_from_env


class Sender:
    def send(self, pixel_id, body, credentials, timeout_s=None):
        return GraphReply(body.count(b'"event_name"'), "ab", 1.0)


class NoQueues:  # a healthy batch stores no letter and parks nothing
    pass


env = function_env(load_template()) | {{"PIXEL_ID": PIXEL, "ACCESS_TOKEN_SECRET_ID": "ab"}}
settings = settings_from_env(env)
relay = Relay(settings, Deliverer(Sender(), StaticTokens(), delivery_config(settings)), NoQueues())
normalize_user_data = validate.normalize_user_data
out = {{"module": validate.__file__}}
now = int(time.time())
for shape in ("single", "data"):
    event = sqs_event({records}, 11, shape, now)
    for label, fn in (("full", normalize_user_data), ("rest", lambda ud, s, t, n: (dict(ud), []))):
        validate.normalize_user_data = fn
        relay.process(event, lambda: 900_000)
        best = float("inf")
        for _ in range(3):
            gc.collect()
            cpu = time.process_time()
            summary = relay.process(event, lambda: 900_000)
            best = min(best, time.process_time() - cpu)
            assert not summary.response["batchItemFailures"], summary.response
        out[f"{{shape}} {{label}}"] = best / {records} * 1e6
print(json.dumps(out))
"""


def run(src: Path, records: int, child: str = CHILD) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{ROOT}")
    out = subprocess.run([sys.executable, "-c", child.format(records=records)], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True).stdout  # fmt: skip
    doc = json.loads(out.strip().splitlines()[-1])
    if not str(doc.pop("module")).startswith(str(src)):
        raise RuntimeError(f"imported another capi_relay, not the code under {src}")
    return {key: float(value) for key, value in doc.items()}


def main(argv: list[str] | None = None, child: str = CHILD, prog: str = "python -m bench.ab_relay",
         description: str = __doc__.splitlines()[0]) -> int:  # fmt: skip
    """Interleaved rounds of ``child`` (bench.ab_validate passes its own) under both revisions' ``src/``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--old-rev", required=True, help="a git revision whose src/ is the baseline")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args(argv)
    times: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.old_rev, "src"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        sides = {"old": Path(tmp) / "src", "new": ROOT / "src"}
        for i in range(args.rounds):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                for key, value in run(sides[name], args.records, child).items():
                    times[name].setdefault(key, []).append(value)
            print(f"round {i + 1}: " + "  ".join(f"{k} {times['old'][k][-1]:.1f}->{times['new'][k][-1]:.1f}"
                                                   for k in times["old"]), flush=True)  # fmt: skip
    print(f"µs/event, old = {args.old_rev}, new = this tree; median [min] of {args.rounds} rounds")
    for key in times["old"]:
        old, new = times["old"][key], times["new"][key]
        print(f"  {key:12} old {statistics.median(old):6.1f} [{min(old):.1f}]  new {statistics.median(new):6.1f} "
              f"[{min(new):.1f}]  new/old {statistics.median(new) / statistics.median(old):.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

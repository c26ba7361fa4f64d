"""A/B benchmark of normalization: another revision's ``src/`` against this tree's, interleaved.

    python -m bench.ab_normalize --old-rev main [--rounds 6] [--events 10000]

Each round runs bench_normalize's ``engine`` (json.loads -> prepare_event -> json.dumps over the same generated
events) once in a fresh interpreter per side, alternating which side goes first, so a shared machine's load
falls on both alike. Each interpreter times three passes and keeps the fastest median (µs/event). Prints every
round, the min and median per side and new/old. Prints numbers; asserts nothing.
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
import json
from bench import bench_normalize as b
from capi_relay.prepare import normalize
events = b.make_events({events}, 7)
best = min(b.time_run(b.engine, events) for _ in range(3))
print(json.dumps({{"engine": best, "module": normalize.__file__}}))
"""


def run(src: Path, events: int) -> float:
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{ROOT}")
    out = subprocess.run([sys.executable, "-c", CHILD.format(events=events)], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True).stdout  # fmt: skip
    doc = json.loads(out.strip().splitlines()[-1])
    if not str(doc["module"]).startswith(str(src)):
        raise RuntimeError(f"imported {doc['module']}, not the code under {src}")
    return float(doc["engine"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_normalize", description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", required=True, help="a git revision whose src/ is the baseline")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.old_rev, "src"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        sides = {"old": Path(tmp) / "src", "new": ROOT / "src"}
        times: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(args.rounds):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                times[name].append(run(sides[name], args.events))
                print(f"round {i + 1} {name}: {times[name][-1]:.2f} µs/event", flush=True)
    for name, values in times.items():
        print(f"{name}: min {min(values):.2f}  median {statistics.median(values):.2f} µs/event")
    print(f"new/old: {min(times['new']) / min(times['old']):.3f} (min), "
          f"{statistics.median(times['new']) / statistics.median(times['old']):.3f} (median)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

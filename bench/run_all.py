"""`make bench`: every benchmark in turn. Each prints its own table (command, inputs, machine, medians and
min/max over repeated runs). Nothing here asserts a number.

    python -m bench.run_all [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench import (
    bench_coldstart,
    bench_cost,
    bench_delivery,
    bench_hostile,
    bench_invocation,
    bench_normalize,
    bench_pipeline,
    bench_quality_coldstart,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args(argv)
    quick = args.quick
    benches: list[tuple[str, Callable[[], object]]] = [
        ("per-event CPU (issue 3 / 5.1)", lambda: bench_normalize.main(["--runs", "2" if quick else "5"])),
        (
            "whole job: handler vs SDK vs floors (issues 14, 21)",
            lambda: bench_pipeline.main(["--runs", "1" if quick else "5"]),
        ),
        ("delivery wall time (issue 4)", lambda: bench_delivery.main(["--repeat", "1" if quick else "3"])),
        ("invocation (issue 5.2)", lambda: bench_invocation.main(["--repeat", "1"] if quick else [])),
        ("cold start (issue 5.3)", lambda: bench_coldstart.main(["--runs", "3"] if quick else [])),
        (
            "quality reader cold start (issue 20)",
            lambda: bench_quality_coldstart.main(["--runs", "2" if quick else "5"]),
        ),
        ("cost per million events (issue 5.4)", lambda: bench_cost.main([])),
        ("hostile inputs and 10,000 records under the RIE (issue 11)", lambda: bench_hostile.main([])),
    ]
    for title, run in benches:
        print(f"\n{'=' * 100}\n== {title}\n{'=' * 100}", flush=True)
        started = time.perf_counter()
        run()
        print(f"({title}: {time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

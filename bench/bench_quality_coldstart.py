"""Cold start of the quality reader (``capi_relay.quality.handler.lambda_handler``) under the Lambda Runtime
Interface Emulator: the same artifact as the relay (``.aws-sam/build/RelayFunction``; ``make build``), a
fresh emulator per run, one scheduled read against the Graph stand-in with the token from moto.

Reports the median INIT duration, the first invoke (reads the secret: boto3 is imported there, then one
GET of the Dataset Quality API) and a warm invoke, and the slowest imports of the handler module. The
emulator runs at full CPU; Lambda at the template's 512 MB gets 512 / 1,769 of a vCPU (~3.5x slower CPU-bound work).
Asserts nothing.

    python -m bench.bench_quality_coldstart [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from bench.bench_coldstart import ensure_artifact, local_services
from bench.common import PIXEL
from local.rie import LambdaEmulator

HANDLER = "capi_relay.quality.handler.lambda_handler"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--build", action="store_true", help="rebuild the artifact first")
    args = parser.parse_args(argv)
    artifact = ensure_artifact(args.build)
    runs: list[dict[str, float]] = []
    with local_services() as services:
        env = {**services, "QUALITY_PIXEL_IDS": PIXEL, "POWERTOOLS_SERVICE_NAME": "capi-relay"}
        for _ in range(args.runs):
            with LambdaEmulator(artifact, env, handler=HANDLER, memory_mb=512, timeout_s=60) as fn:
                first, error, logs = fn.invoke({"source": "aws.scheduler"})
                if error or not isinstance(first, dict) or first.get("read") != 1:
                    raise RuntimeError(f"the quality read failed: {first}\n{logs[-2000:]}")
                fn.invoke({"source": "aws.scheduler"})
                inits, invokes = fn.init_durations_ms(), fn.invoke_durations_ms()
            runs.append({"init": inits[0], "first": invokes[0], "warm": invokes[1]})
        importtime = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {HANDLER.rsplit('.', 1)[0]}"],
            cwd=artifact, env={**env, "PYTHONPATH": str(artifact), "AWS_REGION": "us-east-1"},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    print(f"python -m bench.bench_quality_coldstart --runs {args.runs}  (artifact {artifact.name}, handler {HANDLER})")
    for key in ("init", "first", "warm"):
        values = [r[key] for r in runs]
        print(f"  {key:<6} median {statistics.median(values):7.1f} ms  [{min(values):.1f}-{max(values):.1f}]")
    rows = []
    for line in importtime.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print("  slowest imports (cumulative us):")
    for cumulative, name in sorted(rows, reverse=True)[:8]:
        print(f"    {cumulative:>8}  {name}")


if __name__ == "__main__":
    main()

"""Cold start of the built artifact under the Lambda Runtime Interface Emulator (no Docker).

Builds the artifact (``make build``) unless ``.aws-sam/build/RelayFunction`` exists (``--build`` forces it),
then starts a fresh emulator (``local.rie.LambdaEmulator``: a fresh execution environment) ``--runs`` times
for each variant and invokes it once with a one-record SQS event:

* ``pyc``: the makefile-built artifact as is (unchecked-hash ``.pyc`` compiled in);
* ``no-pyc``: the same files with every ``__pycache__`` removed (what a plain ``sam build`` ships:
  ``/var/task`` is read-only, so Python compiles every imported module on every cold start);
* ``core``: the artifact with this machine's build of the compiled core beside its arm64 one (``make core``):
  what Lambda's arm64 runtime loads, the C extensions instead of the core modules' ``.pyc``. The artifact's own
  arm64 extensions (the core, orjson) cannot load on this x86_64 machine, so ``pyc`` and ``no-pyc`` run the
  pure-Python core and the standard json module (on an arm64 host they load); each run checks which core it ran.

Reports the median INIT duration (interpreter + awslambdaric + the handler module's imports and module
code, the emulator's ``INIT REPORT``), the first invoke's duration (it reads the secret: boto3 is imported
lazily there) and a warm invoke. Secrets Manager is a moto server and the Graph API the stand-in, both on
loopback. Also prints the artifact size and the slowest imports (``python -X importtime``). The emulator
runs at full CPU; Lambda at MemorySize M gets M / 1,769 MB of a vCPU, so scale accordingly. Target: INIT
median <= 200 ms (pyc). Asserts nothing.

    python -m bench.bench_coldstart [--runs 7] [--build] [--top 15]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import io
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.bench_cost import sqs_event
from bench.cfn import function_properties, load_template, parameter_default
from bench.common import PIXEL, TOKEN
from local.rie import LambdaEmulator

ROOT = Path(__file__).resolve().parent.parent
ARTIFACT = ROOT / ".aws-sam" / "build" / "RelayFunction"
SECRET_NAME = "capi-relay/bench-token"
TARGET_INIT_MS = 200.0  # issue 14: Init under the RIE with the .pyc the build compiles


def ensure_artifact(force: bool) -> Path:
    if force or not (ARTIFACT / "capi_relay" / "handler.py").exists():
        print("building: make build", flush=True)
        subprocess.run(["make", "build"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return ARTIFACT


def function_env(template: dict[str, Any]) -> dict[str, str]:
    """The template's environment for RelayFunction with parameter defaults filled in ("" if none). A ``Ref``
    to a queue of the stack (``DLQ_URL``) becomes a queue URL of that shape (what CloudFormation passes);
    nothing calls it unless an event is quarantined, which no benchmark input is."""
    variables = function_properties(template)["Environment"]["Variables"]
    resources = template.get("Resources", {})
    env = {}
    for name, declared in variables.items():
        try:
            value = parameter_default(template, declared)
        except KeyError:  # a required parameter (AccessTokenSecretArn): local_services() supplies it
            value = ""
        if isinstance(value, dict) and set(value) == {"Ref"}:
            resource = resources.get(value["Ref"], {})
            is_queue = resource.get("Type") == "AWS::SQS::Queue"
            value = f"https://sqs.us-east-1.amazonaws.com/123456789012/{value['Ref']}" if is_queue else ""
        env[name] = str(value)
    return env


@contextlib.contextmanager
def local_services() -> Iterator[dict[str, str]]:
    """moto (Secrets Manager holding the token) and the Graph stand-in; yields the env overrides."""
    from local.graph_standin import GraphStandIn
    from local.stack import Clients, MotoServer

    with MotoServer(mode="thread") as moto, GraphStandIn(tokens={TOKEN}) as graph:
        Clients(moto.endpoint_url).secretsmanager.create_secret(Name=SECRET_NAME, SecretString=TOKEN)
        yield {
            "AWS_ENDPOINT_URL": moto.endpoint_url,
            "ACCESS_TOKEN_SECRET_ID": SECRET_NAME,
            "PIXEL_ID": PIXEL,
            "GRAPH_API_URL": graph.url,
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }


def without_pyc(artifact: Path, into: Path) -> Path:
    target = into / "RelayFunction"
    shutil.copytree(artifact, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


CORE_DIR = ROOT / "build" / "core-native"


def with_native_core(artifact: Path, into: Path) -> Path | None:
    """A copy of the artifact with build/core-native's extensions added (None: `make core` has not run)."""
    extensions = sorted(CORE_DIR.rglob("*.so")) if CORE_DIR.is_dir() else []
    if not extensions:
        return None
    target = into / "RelayFunction-core"
    shutil.copytree(artifact, target)
    for path in extensions:
        shutil.copyfile(path, target / path.relative_to(CORE_DIR))
    return target


def cold_start(artifact: Path, env: dict[str, str], event: dict[str, Any], memory_mb: int,
               core: str) -> dict[str, float]:  # fmt: skip
    with LambdaEmulator(artifact, env, memory_mb=memory_mb) as fn:
        payload, error, logs = fn.invoke(event)
        if error or not isinstance(payload, dict) or payload.get("batchItemFailures"):
            raise RuntimeError(f"cold invoke did not deliver: {payload}\n{logs[-3000:]}")
        # at the template's log level (WARNING) the function warns when it runs without its compiled core
        if ('"core":"pure"' in logs.replace(" ", "")) != (core == "pure"):
            raise RuntimeError(f"expected the {core} core:\n{logs[-3000:]}")
        fn.invoke(event)
        inits, invokes = fn.init_durations_ms(), fn.invoke_durations_ms()
    if len(inits) != 1 or len(invokes) != 2:
        raise RuntimeError(f"unexpected emulator report: init {inits}, invokes {invokes}")
    return {"init": inits[0], "first": invokes[0], "warm": invokes[1]}


def tree_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def zipped_size(path: Path) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for p in sorted(path.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(path))
    return buf.tell()


def import_times(artifact: Path, env: dict[str, str], top: int) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, module) of ``import capi_relay.handler`` in the artifact, slowest first."""
    run_env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    run_env.update(env)
    run_env.update({"PYTHONPATH": str(artifact), "PYTHONDONTWRITEBYTECODE": "1", "AWS_REGION": "us-east-1",
                    "AWS_DEFAULT_REGION": "us-east-1"})  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import capi_relay.handler"],
        cwd=artifact, env=run_env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[len("import time:") :].split("|"))
        rows.append((int(cumulative_us), int(self_us), name))
    rows.sort(reverse=True)
    return rows[:top]


def _median(runs: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in runs]
    return f"{statistics.median(values):7.1f} [{min(values):.0f}-{max(values):.0f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="cold starts per variant (each a fresh emulator)")
    parser.add_argument("--build", action="store_true", help="rebuild the artifact first")
    parser.add_argument("--top", type=int, default=15, help="slowest imports to list")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    artifact = ensure_artifact(args.build)
    template = load_template()
    env = function_env(template)
    memory = int(parameter_default(template, function_properties(template)["MemorySize"]))

    print(f"command: python -m bench.bench_coldstart {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; emulator at "
          f"full CPU (Lambda at {memory} MB gets {min(1.0, memory / 1769):.2f} vCPU)")  # fmt: skip
    size, count = tree_size(artifact)
    print(f"artifact: .aws-sam/build/RelayFunction, {size / 2**20:.1f} MiB unzipped in {count} files, "
          f"{zipped_size(artifact) / 2**20:.1f} MiB zipped")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="capi-coldstart-") as tmp, local_services() as services:
        variants = {"pyc": artifact, "no-pyc": without_pyc(artifact, Path(tmp))}
        if (core := with_native_core(artifact, Path(tmp))) is not None:
            variants["core"] = core
        else:
            print("core: build/core-native is missing (make core): the compiled-core variant is not measured")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        # the artifact's own core loads only where it was built for this machine (an arm64 host): else pure
        library = artifact / f"capi_relay_core__mypyc{importlib.machinery.EXTENSION_SUFFIXES[0]}"
        artifact_core = "compiled" if library.exists() else "pure"
        run_env = {**env, **services}
        for _ in range(args.runs):  # interleaved, so drift on a shared machine hits both alike
            for name, path in variants.items():
                event = sqs_event(1, int(time.time()))
                expected = "compiled" if name == "core" else artifact_core
                results[name].append(cold_start(path, run_env, event, memory, core=expected))
        nopyc_size, _ = tree_size(variants["no-pyc"])

    print(f"\ncold starts: {args.runs} per variant, each a fresh emulator; ms, median [min-max]")
    print(f"  {'variant':<8} {'INIT':>22} {'first invoke':>22} {'warm invoke':>22}")
    for name, runs in results.items():
        print(f"  {name:<8} {_median(runs, 'init'):>22} {_median(runs, 'first'):>22} {_median(runs, 'warm'):>22}")
    init_pyc = statistics.median(r["init"] for r in results["pyc"])
    init_nopyc = statistics.median(r["init"] for r in results["no-pyc"])
    verdict = "met" if init_pyc <= TARGET_INIT_MS else "MISSED"
    print(f"  INIT with .pyc {init_pyc:.0f} ms vs without {init_nopyc:.0f} ms ({init_nopyc / init_pyc:.1f}x); "
          f"target <= {TARGET_INIT_MS:.0f} ms: {verdict}")  # fmt: skip
    print(f"  .pyc files add {(size - nopyc_size) / 2**20:.1f} MiB unzipped")
    print("  first invoke includes the lazy boto3 / Powertools parameters import and the Secrets Manager call")

    print(f"\nslowest imports of `import capi_relay.handler` in the artifact (-X importtime, .pyc), top {args.top}:")
    print(f"  {'cumulative ms':>13} {'self ms':>8}  module")
    for cumulative, self_us, name in import_times(artifact, {**env, "ACCESS_TOKEN_SECRET_ID": "x"}, args.top):
        print(f"  {cumulative / 1000:>13.1f} {self_us / 1000:>8.1f}  {name}")


if __name__ == "__main__":
    main()

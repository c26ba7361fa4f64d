"""Import the Lambda artifact's modules and prepare a corpus of events with them; print one JSON line per event.

    python scripts/arm64_artifact_check.py --root DIR --corpus FILE [--machine aarch64]
        [--expect-compiled [MOD ...]] [--report FILE]

Stdlib only: it runs inside the emulated aarch64 CPython 3.13 (scripts/arm64_python.py) with
``PYTHONPATH=.aws-sam/build/RelayFunction``, and on this machine with ``PYTHONPATH=src``, so that
``scripts/arm64_check.py`` (``make arm64-check``) can compare both outputs byte for byte.

Checks (exit status 1 and the reason on stderr when one fails):

* ``--machine M``: ``platform.machine() == M``, and orjson (the artifact's C extension) loaded from ``--root`` out of
  a ``.so`` built for M (``*.cpython-313-M-linux-gnu.so``);
* every Handler of template.yaml imports (with the environment events/env.json gives that function), and every
  ``capi_relay`` module loaded is from ``--root``; the ones loaded from a ``.so`` are reported as compiled;
* ``--expect-compiled MOD ...``: each of these modules loaded from a ``.so`` built for this machine.

Then every event of the corpus (``{"now": int, "events": [...]}``, JSON) goes through
``capi_relay.prepare.events.prepare_event(event, NormalizationSettings(), now)``; stdout gets, per event,
``{"i": n, "encoded": "<the POSTed bytes, UTF-8>", "drops": [[field, reason]...], "notes": [...],
"match_keys": n}`` or ``{"i": n, "rejected": reason, "detail": "..."}`` (ASCII, keys sorted).
``--report FILE`` writes what was loaded from where (JSON).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_HANDLER_RE = re.compile(r"^\s+Handler:\s*([A-Za-z_][\w.]*)\.(\w+)\s*$", re.MULTILINE)
# template.yaml's logical id of each function, for its local environment (events/env.json)
_FUNCTION_RE = re.compile(r"^  (\w+):\n    Type: AWS::Serverless::Function\b", re.MULTILINE)


class CheckFailed(Exception):
    """A check did not hold; the message says which and why."""


def handlers(template: Path) -> list[tuple[str, str]]:
    """(function logical id, handler module) for each Handler of the template, in order."""
    text = template.read_text(encoding="utf-8")
    functions = [(m.start(), m.group(1)) for m in _FUNCTION_RE.finditer(text)]
    out = []
    for match in _HANDLER_RE.finditer(text):
        owner = [name for start, name in functions if start < match.start()]
        out.append((owner[-1] if owner else "", match.group(1)))
    if not out:
        raise CheckFailed(f"{template}: no Handler entries")
    return out


def extension_suffix(machine: str) -> str:
    return f".cpython-{sys.version_info.major}{sys.version_info.minor}-{machine}-linux-gnu.so"


def module_file(module: ModuleType) -> Path:
    file = getattr(module, "__file__", None)
    if not file:
        raise CheckFailed(f"{module.__name__} has no __file__ (a namespace package or a built-in?)")
    return Path(file).resolve()


def under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_orjson(root: Path, machine: str) -> str:
    """orjson's functions come from the artifact's extension built for ``machine``."""
    orjson = importlib.import_module("orjson")
    extension = sys.modules.get("orjson.orjson")  # the package's __init__.py re-exports the extension's functions
    if extension is None or getattr(extension, "dumps", None) is not orjson.dumps:
        raise CheckFailed(f"orjson.dumps ({module_file(orjson)}) is not the orjson.orjson extension's")
    file = module_file(extension)
    if not (under(file, root) and file.name.endswith(extension_suffix(machine))):
        raise CheckFailed(f"orjson.dumps comes from {file}, not from a {machine} extension under {root}")
    return str(file)


def import_handlers(template: Path, env_json: Path) -> list[str]:
    """Import each handler module with its function's local environment (INIT reads and validates it)."""
    environments: dict[str, dict[str, str]] = json.loads(env_json.read_text(encoding="utf-8"))
    imported = []
    for function, module in handlers(template):
        os.environ.update(environments.get(function, {}))
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise CheckFailed(f"import {module} ({function}) failed: {type(exc).__name__}: {exc}") from exc
        imported.append(module)
    return imported


def loaded_modules(root: Path) -> dict[str, str]:
    """capi_relay's modules (and mypyc's shared ``*__mypyc`` modules) loaded now -> their file."""
    out = {}
    for name, module in sorted(sys.modules.items()):
        if name == "capi_relay" or name.startswith("capi_relay.") or name.endswith("__mypyc"):
            file = module_file(module)
            if not under(file, root):
                raise CheckFailed(f"{name} was loaded from {file}, outside {root}")
            out[name] = str(file)
    return out


def check_compiled(expected: Sequence[str], machine: str) -> None:
    for name in expected:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise CheckFailed(f"--expect-compiled {name}: cannot import: {exc}") from exc
        file = module_file(module)
        if not file.name.endswith(extension_suffix(machine)):
            raise CheckFailed(f"--expect-compiled {name}: loaded from {file}, not a {machine} .so")


def prepare_corpus(corpus: Path) -> list[str]:
    """One JSON line per event of the corpus, as prepare_event makes it."""
    events_module = importlib.import_module("capi_relay.prepare.events")
    settings_module = importlib.import_module("capi_relay.settings")
    prepared_type = importlib.import_module("capi_relay.ingest.model").Prepared
    data = json.loads(corpus.read_text(encoding="utf-8"))
    settings = settings_module.NormalizationSettings()
    lines = []
    for i, event in enumerate(data["events"]):
        result = events_module.prepare_event(event, settings, data["now"])
        row: dict[str, Any] = {"i": i}
        if isinstance(result, prepared_type):
            row["encoded"] = result.encoded.decode("utf-8", "surrogatepass")
            row["drops"] = [[d.field, d.reason] for d in result.drops]
            row["notes"] = list(result.notes)
            row["match_keys"] = result.match_keys
        else:
            row["rejected"] = result.reason
            row["detail"] = result.detail
        lines.append(json.dumps(row, sort_keys=True, ensure_ascii=True))
    return lines


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root).resolve()
    machine = platform.machine()
    report: dict[str, Any] = {"machine": machine, "python": platform.python_version(), "root": str(root)}
    report["ext_suffix"] = sysconfig.get_config_var("EXT_SUFFIX")
    if args.machine is not None:
        if machine != args.machine:
            raise CheckFailed(f"platform.machine() is {machine!r}, not {args.machine!r}")
        report["orjson"] = check_orjson(root, machine)
    report["handlers"] = import_handlers(Path(args.template), Path(args.env_json))
    check_compiled(args.expect_compiled, machine)
    modules = loaded_modules(root)
    report["modules"] = len(modules)
    report["compiled"] = sorted(name for name, file in modules.items() if file.endswith(".so"))
    report["expect_compiled"] = list(args.expect_compiled)
    lines = prepare_corpus(Path(args.corpus))
    report["events"] = len(lines)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arm64_artifact_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="where capi_relay must load from (the artifact, or src)")
    parser.add_argument("--corpus", required=True, help='JSON {"now": int, "events": [...]}')
    parser.add_argument("--machine", default=None, help="required platform.machine(); also checks orjson's .so")
    parser.add_argument("--expect-compiled", nargs="*", default=[], metavar="MOD", help="modules that must be .so")
    parser.add_argument("--template", default=str(ROOT / "template.yaml"), help="for the Handler entries")
    parser.add_argument("--env-json", default=str(ROOT / "events" / "env.json"), help="each function's environment")
    parser.add_argument("--report", default=None, help="write what loaded from where to this JSON file")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except CheckFailed as exc:
        print(f"arm64_artifact_check: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    compiled = ", ".join(report["compiled"]) or "none"
    print(
        f"arm64_artifact_check: {report['machine']} CPython {report['python']}: {report['modules']} capi_relay "
        f"modules from {report['root']} (compiled: {compiled}); {report['events']} events",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

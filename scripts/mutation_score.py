"""Per-module mutation scores from mutmut's results (run after ``mutmut run``; ``make mutation`` does both).

Usage: ``python scripts/mutation_score.py [MODULE]``. Reads ``mutmut results --all true`` and the surviving
mutants judged equivalent in docs/mutation.md (lines ``- `capi_relay.<module>.<mutant>`[, `...`] -- reason``), and
prints, per module: mutants, killed (a test failed, or it timed out: shown apart), survived, equivalent, and the score
killed / (checked - equivalent). Exit status 1 when a module that was run scores below 90 %.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("fate.ledger", "deliver.search", "fate.letters", "ingest.envelope", "deliver.throttle", "relay")
TARGET = 0.90
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}
_NAME_RE = re.compile(r"`(capi_relay\.[^`]+)`")


def equivalents() -> set[str]:
    doc = ROOT / "docs" / "mutation.md"
    if not doc.is_file():
        return set()
    lines = [line.split(" -- ", 1)[0] for line in doc.read_text().splitlines() if line.lstrip().startswith("- `")]
    return {name for line in lines for name in _NAME_RE.findall(line)}


def results() -> dict[str, str]:
    mutmut = Path(sys.executable).parent / "mutmut"
    out = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=ROOT, capture_output=True,  # noqa: S603
                         text=True, check=True).stdout  # fmt: skip
    status: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, value = line.strip().rpartition(": ")
        if sep and name.startswith("capi_relay."):
            status[name] = value.strip()
    return status


def _module_of(name: str) -> str:
    """``capi_relay.deliver.search.x_f__mutmut_3`` -> ``deliver.search`` (the listed module it belongs to)."""
    inner = name.removeprefix("capi_relay.")
    return next((m for m in MODULES if inner.startswith(m + ".")), inner.split(".")[0])


def main(argv: list[str]) -> int:
    wanted = argv[1:] or list(MODULES)
    status = results()
    equivalent = equivalents()
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, value in status.items():
        module = _module_of(name)
        if module not in wanted:
            continue
        if value == "not checked":
            by_module[module]["not checked"] += 1
            continue
        by_module[module]["mutants"] += 1
        if value in DETECTED:
            by_module[module]["killed"] += 1
            by_module[module]["timeout"] += value == "timeout"
        elif name in equivalent:
            by_module[module]["equivalent"] += 1
        else:
            by_module[module]["survived"] += 1
            survivors[module].append(f"{name} ({value})")
    low = False
    print(
        f"{'module':<12}{'mutants':>8}{'killed':>8}{'(timeout)':>10}{'survived':>9}{'equiv.':>8}{'raw':>8}{'score':>8}"
    )
    for module in wanted:
        c = by_module.get(module)
        if not c or not c["mutants"]:
            print(f"{module:<12}  not run")
            continue
        raw = c["killed"] / c["mutants"]
        score = c["killed"] / max(1, c["mutants"] - c["equivalent"])
        low = low or score < TARGET
        print(f"{module:<12}{c['mutants']:>8}{c['killed']:>8}{c['timeout']:>10}{c['survived']:>9}{c['equivalent']:>8}"
              f"{raw:>8.1%}{score:>8.1%}")  # fmt: skip
    for module in wanted:
        for line in survivors.get(module, []):
            print(f"  survived: {line}")
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

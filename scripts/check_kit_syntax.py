"""The producer kit (``capi-relay check`` / ``send`` / ``dlq``, installed with ``pip install .``) must run on
Python 3.10, the oldest ``pyproject.toml`` admits, while the Lambda function runs on python3.13. This static
check runs vermin (minimum-version detection: syntax, stdlib modules, members and keywords) with target 3.10
on every module the kit imports; ``make kit-test`` also installs and runs the kit on the oldest interpreter
the machine has.

    python scripts/check_kit_syntax.py     # exit 0: every kit module runs on 3.10
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = "3.10"
# Entry points of the kit; what they import (eagerly or on first use) is found by importing them.
ENTRY_POINTS = (
    "capi_relay.tools.cli",
    "capi_relay.tools.producer",
    "capi_relay.tools.dlq",
    "capi_relay.aws.sqs",
    "capi_relay.tools.explain",
)
LAZY = (
    "capi_relay.prepare._tables.countries",
    "capi_relay.prepare._tables.country_names",
)  # tables loaded on first use


def kit_modules() -> list[Path]:
    code = (
        "import importlib, sys\n"
        f"for name in {ENTRY_POINTS + LAZY!r}: importlib.import_module(name)\n"
        "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('capi_relay')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)  # noqa: S603
    return sorted({Path(line) for line in out.stdout.split()})


def main() -> int:
    files = kit_modules()
    result = subprocess.run(  # noqa: S603 -- fixed arguments
        [str(Path(sys.executable).with_name("vermin")), f"-t={TARGET}-", "--no-tips", "--violations",
         "--eval-annotations", "--no-parse-comments", *map(str, files)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        print(f"check_kit_syntax: a producer-kit module needs a Python newer than {TARGET}", file=sys.stderr)
        return 1
    print(f"check_kit_syntax: {len(files)} producer-kit modules run on Python {TARGET}+ (vermin)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

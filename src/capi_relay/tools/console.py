"""What every ``capi-relay`` command (check, send, dlq, quality) shares with the terminal: its input read
with a cap, and its errors as one line on stderr (never a traceback). An operator tool: not in the Lambda
artifact (ARCHITECTURE.md).
"""

from __future__ import annotations

import sys
from typing import TextIO


def read_text(path: str, stdin: TextIO, limit: int) -> str:
    """The file (``-``: stdin) as text, at most ``limit`` + 1 characters: enough to tell it is over ``limit``."""
    if path == "-":
        return stdin.read(limit + 1)
    with open(path, encoding="utf-8") as handle:
        return handle.read(limit + 1)


def note(message: str) -> None:
    """``capi-relay: <message>`` on stderr (stdout holds a command's result alone)."""
    print(f"capi-relay: {message}", file=sys.stderr)


def fail(message: str, code: int = 2) -> int:
    """:func:`note` the error and return the exit code (2: unreadable input or configuration)."""
    note(message)
    return code

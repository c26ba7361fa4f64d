"""What the producer kit (``check``, ``send``, ``dlq``; ``pip install .``) needs to run on Python 3.10, the
oldest it supports; the Lambda function itself runs on python3.13."""

from __future__ import annotations

from datetime import timezone

__all__ = ["UTC", "orjson"]

UTC = timezone.utc  # noqa: UP017 -- datetime.UTC is new in 3.11

# orjson (a C extension in the Lambda artifact) is optional: the producer kit may run without it, and the arm64
# artifact's wheel does not load under an x86_64 emulator. None when it cannot be imported.
try:
    import orjson
except ImportError:
    orjson = None  # type: ignore[assignment]

"""What the producer kit (``check``, ``send``, ``dlq``; ``pip install .``) needs to run on Python 3.10, the
oldest it supports; the Lambda function itself runs on python3.13."""

from __future__ import annotations

from datetime import timezone

UTC = timezone.utc  # noqa: UP017 -- datetime.UTC is new in 3.11

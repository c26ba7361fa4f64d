"""Pieces the benchmarks share: the Graph stand-in as a subprocess, a static token provider, formatting."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from capi_relay.aws.secrets import Credentials
from local.stack import free_port

PIXEL = "100000000000001"
TOKEN = "EAAbench" + "0" * 32


class StaticTokens:
    def get(self, pixel_id: str, *, force_refresh: bool = False) -> Credentials:
        return Credentials(TOKEN)


@contextmanager
def standin_process() -> Iterator[str]:
    """The Graph stand-in as a subprocess on a free loopback port; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.graph_standin", "--port", str(port), "--token", TOKEN],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{url}/_standin/state", timeout=1) as resp:
                    resp.read()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("stand-in did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def control(url: str, path: str, doc: dict[str, object]) -> None:
    request = urllib.request.Request(f"{url}/_standin/{path}", data=json.dumps(doc).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        resp.read()


def request_count(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_standin/state", timeout=30) as resp:
        return len(json.loads(resp.read())["requests"])


def fmt(values: list[float], scale: float = 1000.0) -> str:
    med = statistics.median(values) * scale
    return f"{med:8.0f} [{min(values) * scale:.0f}-{max(values) * scale:.0f}]"


def load_note() -> str:
    """The machine's load averages (1, 5, 15 min): others' work on a shared machine slows every figure."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"


def machine_note() -> str:
    return (f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}; "
            f"{load_note()}")  # fmt: skip


def sqs_record(body: str, sent_ms: str, receipt_handle: str) -> dict[str, Any]:
    """One record of a Lambda SQS event as the event source mapping builds it (AWS's sample shape)."""
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": receipt_handle,
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": sent_ms, "SenderId": "AIDABENCH",
                       "ApproximateFirstReceiveTimestamp": sent_ms},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:capi-relay-events",
        "awsRegion": "us-east-1",
    }  # fmt: skip


def reset_peak_rss() -> None:
    """Reset this process's peak-RSS mark (``VmHWM``) to its current RSS: a child started by fork+exec
    inherits its parent's (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")


def peak_rss_mb() -> float:
    """This process's peak RSS since start or :func:`reset_peak_rss`: ``VmHWM`` (Linux), else ``ru_maxrss``
    (which Linux keeps across fork+exec, so it would include the parent's size)."""
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

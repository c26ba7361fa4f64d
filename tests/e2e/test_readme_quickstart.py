"""The README's quickstart works exactly as written: every shell block fenced as ```` ```bash runnable ````
runs, in order, from the repository root (```` ```bash runnable background ```` starts a long-running
command, such as ``make local-stack``, and the later blocks run once it prints ``ready:``). Only the local
stack's ports are moved (``LOCAL_MOTO_PORT`` / ``LOCAL_GRAPH_PORT``, Makefile variables) so that the test
never collides with a stack someone has running. The deploy steps need an AWS account and are not run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from local.stack import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
FENCE_RE = re.compile(r"^```bash runnable( background)?\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def runnable_blocks(text: str) -> list[tuple[bool, str]]:
    return [(bool(background), body) for background, body in FENCE_RE.findall(text)]


def test_the_readme_marks_its_local_quickstart_runnable() -> None:
    blocks = runnable_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    commands = "\n".join(body for _, body in blocks)
    for command in ("make demo", "make local-stack", "make send FILE=", "capi-relay check --explain"):
        assert command in commands
    assert [background for background, _ in blocks].count(True) == 1


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if re.search(pattern, text):
            return text
        if proc.poll() is not None:
            pytest.fail(f"the background block exited ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"{pattern!r} not seen within {timeout_s} s:\n{path.read_text(errors='replace')[-3000:]}")


def test_the_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    blocks = runnable_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    env = {**os.environ, "LOCAL_MOTO_PORT": str(free_port()), "LOCAL_GRAPH_PORT": str(free_port())}
    env.pop("AWS_ENDPOINT_URL", None)  # a reader's shell has none: the commands must carry what they need
    background: subprocess.Popen[bytes] | None = None
    log = tmp_path / "background.log"
    try:
        for number, (is_background, body) in enumerate(blocks):
            if is_background:
                assert background is None
                with log.open("wb") as out:
                    background = subprocess.Popen(["bash", "-c", body], cwd=ROOT, env=env, stdout=out,
                                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
                _wait_for(log, r"(?m)^ready: ", background, timeout_s=300)
                continue
            result = subprocess.run(["bash", "-eo", "pipefail", "-c", body], cwd=ROOT, env=env, capture_output=True,
                                    text=True, timeout=600, check=False)  # fmt: skip
            assert result.returncode == 0, f"block {number}:\n{body}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert background is not None
        # What the quickstart says local-stack prints for examples/first-events.jsonl
        text = _wait_for(log, r"event 1 \(meta-rejects-me\) quarantined \(graph_invalid_", background, timeout_s=60)
        assert re.search(r"event 0 \(order-1001\) delivered", text)
    finally:
        if background is not None and background.poll() is None:
            os.killpg(background.pid, signal.SIGTERM)  # the group this test started (make, the stack, its children)
            try:
                background.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(background.pid, signal.SIGKILL)
                background.wait(timeout=30)

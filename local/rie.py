"""Run a built Lambda artifact the way Lambda does, without Docker: the AWS Lambda Runtime Interface
Emulator (RIE) that ships inside the aws-sam-cli wheel, driving ``python -m awslambdaric <handler>``.

Small API (reused by ``local/esm.py``, the e2e tests and ``bench/bench_coldstart.py``)::

    from local.rie import LambdaEmulator

    with LambdaEmulator(".aws-sam/build/RelayFunction", env={"ACCESS_TOKEN_SECRET_ID": "x", ...}) as fn:
        payload, is_function_error, logs = fn.invoke({"Records": [...]})
        fn.init_durations_ms()   # [281.2] -- the emulator's INIT REPORT (Lambda's "Init Duration")

* ``LambdaEmulator(artifact_dir, env, port=0, ...)``: ``port=0`` picks a free loopback port (never
  9001). The runtime API gets its own free port too, so several emulators can run at once.
* ``start()`` launches the emulator (nothing is imported yet: like Lambda's on-demand INIT here,
  the function initialises on the first invoke, whose REPORT line carries ``Init Duration``).
* ``invoke(event)`` POSTs the event and returns ``(payload, is_function_error, logs)``: ``payload`` is the
  decoded JSON response (``None`` if it is not JSON), ``is_function_error`` is true for an
  ``X-Amz-Function-Error`` header or an ``errorType`` payload (INIT failure, timeout, uncaught exception:
  the caller must treat every record as failed), and ``logs`` is what the function and emulator printed
  during that invoke (START ... REPORT).
* ``stop()`` ends the emulator and the runtime it started (its own process group only).
* A fresh ``LambdaEmulator`` is a fresh execution environment, i.e. the next invoke is a cold start.

The runtime is ``python`` (default: this interpreter, whose site-packages provide ``awslambdaric``, a dev
dependency that is not in the artifact) with ``PYTHONPATH`` = the artifact directory, so the artifact's
own packages shadow the venv's, and ``PYTHONDONTWRITEBYTECODE=1`` because ``/var/task`` is read-only.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

__all__ = ["DEFAULT_HANDLER", "EmulatorError", "LambdaEmulator", "find_rie_binary", "free_port"]

DEFAULT_HANDLER = "capi_relay.handler.lambda_handler"
RESERVED_PORT = 9001  # the RIE's default runtime API port: never hand it out
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# The emulator's own INIT phase report; its REPORT line's "Init Duration" is a placeholder (~0.02 ms).
_INIT_RE = re.compile(r"INIT REPORT\(durationMs: ([0-9.]+)\)")
_INVOKE_RE = re.compile(r"INVOKE RTDONE\(status: [^,]*, produced bytes: \d+, duration: ([0-9.]+)ms\)")
_REPORT_RE = re.compile(r"^REPORT RequestId:", re.MULTILINE)
# Environment a Lambda function sees regardless of the function's own variables.
_PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")


class EmulatorError(RuntimeError):
    """The emulator could not be found, started or reached."""


def find_rie_binary(sam_venv: str | os.PathLike[str] | None = None) -> Path:
    """Path of the RIE binary for this machine inside the aws-sam-cli install.

    Looks in ``$CAPI_RELAY_RIE`` (an explicit binary), then ``sam_venv`` (default ``.venv-sam`` next to
    this repository, i.e. what ``make sam-cli`` creates).
    """
    explicit = os.environ.get("CAPI_RELAY_RIE")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise EmulatorError(f"CAPI_RELAY_RIE={explicit} is not a file")
        return path
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine)
    if arch is None:
        raise EmulatorError(f"no RIE binary for machine type {os.uname().machine}")
    venv = Path(sam_venv) if sam_venv is not None else Path(__file__).resolve().parent.parent / ".venv-sam"
    pattern = str(venv / "lib" / "python3*" / "site-packages" / "samcli" / "local" / "rapid" / f"aws-lambda-rie-{arch}")
    found = sorted(glob.glob(pattern))
    if not found:
        raise EmulatorError(f"aws-lambda-rie-{arch} not found under {venv} (run `make sam-cli`)")
    return Path(found[-1])


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never 9001."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != RESERVED_PORT:
            return port


class LambdaEmulator:
    """One emulated Lambda execution environment for a built artifact (see the module docstring)."""

    def __init__(
        self,
        artifact_dir: str | os.PathLike[str],
        env: Mapping[str, str],
        port: int = 0,
        *,
        handler: str = DEFAULT_HANDLER,
        python: str | None = None,
        timeout_s: int = 30,
        memory_mb: int = 512,
        rie_binary: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        if port == RESERVED_PORT:
            raise ValueError("port 9001 is the emulator's internal runtime API port; use another")
        self.artifact_dir = Path(artifact_dir).resolve()
        package = handler.split(".", maxsplit=1)[0]
        if not (self.artifact_dir / package).exists():
            raise EmulatorError(f"{self.artifact_dir} holds no {package} package (build it first)")
        self.env = dict(env)
        self.port = port
        self.handler = handler
        self.python = python or sys.executable
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.rie_binary = Path(rie_binary) if rie_binary is not None else None
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: list[str] = []
        self._out_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def _environment(self, runtime_api_port: int) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}
        env.update(
            {
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",  # dummy local credentials
                "AWS_LAMBDA_FUNCTION_NAME": "RelayFunction",
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.timeout_s),
                "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{runtime_api_port}",
                "LAMBDA_TASK_ROOT": str(self.artifact_dir),
                "_HANDLER": self.handler,
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env)
        env["PYTHONPATH"] = str(self.artifact_dir)
        return env

    def start(self) -> Self:
        """Launch the emulator and wait until it accepts connections."""
        if self._proc is not None:
            raise EmulatorError("already started")
        binary = self.rie_binary or find_rie_binary()
        if self.port == 0:
            self.port = free_port()
        runtime_api_port = free_port()
        while runtime_api_port == self.port:
            runtime_api_port = free_port()
        cmd = [
            str(binary),
            "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
            "--runtime-api-address", f"127.0.0.1:{runtime_api_port}",
            self.python, "-m", "awslambdaric", self.handler,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.artifact_dir,
            env=self._environment(runtime_api_port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the runtime child too
        )
        self._reader = threading.Thread(
            target=self._read_output, args=(self._proc,), name=f"rie-{self.port}", daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmulatorError(f"emulator exited with {self._proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.02)
        self.stop()
        raise EmulatorError(f"emulator did not listen on 127.0.0.1:{self.port} within {self.start_timeout_s} s")

    def _read_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            with self._out_lock:
                self._out.append(raw.decode("utf-8", "replace"))

    def stop(self) -> None:
        """End the emulator and its runtime (our own process group); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=2)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ use
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{INVOKE_PATH}"

    def output(self) -> str:
        """Everything the emulator and the function printed so far."""
        with self._out_lock:
            return "".join(self._out)

    def _output_len(self) -> int:
        with self._out_lock:
            return len(self._out)

    def invoke(self, event: dict[str, Any], timeout_s: float | None = None) -> tuple[Any, bool, str]:
        """POST ``event``; return ``(payload, is_function_error, logs of this invoke)``. ``payload`` is the
        decoded JSON response as the function returned it (None for an empty body, the raw text when it is not
        JSON), so the caller can apply Lambda's rules to it (a non-object is not a valid batch response)."""
        if self._proc is None:
            raise EmulatorError("not started")
        mark = self._output_len()
        request = urllib.request.Request(
            self.url,
            # compact UTF-8, as local.esm measures it against Lambda's 6 MB payload limit
            data=json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        wait = timeout_s if timeout_s is not None else self.timeout_s + 15
        function_error = False
        try:
            with urllib.request.urlopen(request, timeout=wait) as response:
                body = response.read()
                function_error = bool(response.headers.get("X-Amz-Function-Error"))
        except urllib.error.HTTPError as exc:
            body = exc.read()
            function_error = True
        except OSError as exc:
            raise EmulatorError(f"invoke failed: {exc}\n{self.output()}") from exc
        payload: Any
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = body.decode("utf-8", errors="replace")
        if isinstance(payload, dict) and "errorType" in payload:
            function_error = True
        # The emulator answers a timeout with this bare text and no X-Amz-Function-Error header.
        if isinstance(payload, str) and payload.startswith("Task timed out"):
            function_error = True
        logs = self._logs_since(mark)
        return payload, function_error, logs

    def _logs_since(self, mark: int, wait_s: float = 1.0) -> str:
        """The output since ``mark``, waiting briefly for the REPORT line the emulator prints last."""
        deadline = time.monotonic() + wait_s
        while True:
            with self._out_lock:
                text = "".join(self._out[mark:])
            if _REPORT_RE.search(text) or time.monotonic() >= deadline:
                return text
            time.sleep(0.01)

    def runtime_pid(self) -> int | None:
        """Process id of the function's runtime (``python -m awslambdaric``, the emulator's child), or None
        when it is not running (before the first invoke, after a crash). Linux only (reads ``/proc``)."""
        if self._proc is None:
            return None
        parent = str(self._proc.pid)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
            if stat.rsplit(")", 1)[-1].split()[1] == parent:
                return int(entry.name)
        return None

    def runtime_status_kb(self, field: str = "VmRSS") -> int | None:
        """A ``/proc/<pid>/status`` memory figure of the runtime in KiB (``VmRSS`` resident now, ``VmHWM``
        its peak), or None when the runtime is not running."""
        pid = self.runtime_pid()
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith(f"{field}:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def init_durations_ms(self) -> list[float]:
        """INIT phase durations reported so far (one per cold start, so at most one per emulator).

        Read from the emulator's ``INIT REPORT(durationMs: …)`` line: interpreter start, awslambdaric,
        and the handler module's imports and module-level code, like Lambda's ``Init Duration``.
        """
        return [float(m) for m in _INIT_RE.findall(self.output())]

    def invoke_durations_ms(self) -> list[float]:
        """Handler durations of every invoke so far (``INVOKE RTDONE … duration``), excluding INIT."""
        return [float(m) for m in _INVOKE_RE.findall(self.output())]

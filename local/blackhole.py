"""A black-hole TCP server: accepts connections on loopback, reads what the client sends and never answers.

It models a dependency in a brownout (Secrets Manager, Graph) that completes the TCP handshake and then
hangs: the client's connect succeeds at once and only its read timeout (or its own deadline) ends the wait.
Point a boto3 client at it with ``AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:<port>`` (botocore's
service-specific endpoint variable, which wins over ``AWS_ENDPOINT_URL``).

    with BlackHole() as hole:
        env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = hole.url
        ...
        hole.connections  # how many connections were accepted

Connections are held open until :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self

from local.stack import free_port


class BlackHole:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._lock = threading.Lock()
        self._accepted = 0
        self._received = 0
        self._clients: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self._accepted

    @property
    def bytes_received(self) -> int:
        with self._lock:
            return self._received

    def start(self) -> Self:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self.port))
        server.listen(64)
        server.settimeout(0.1)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name=f"blackhole-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._accepted += 1
                self._clients.append(client)
            threading.Thread(target=self._swallow, args=(client,), daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        """Read and discard until the client hangs up or the server stops; never write a byte."""
        client.settimeout(0.2)
        while not self._stop.is_set():
            try:
                chunk = client.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._received += len(chunk)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            clients, self._clients = self._clients, []
        for sock in [*clients, *([self._server] if self._server else [])]:
            with contextlib.suppress(OSError):
                sock.close()
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

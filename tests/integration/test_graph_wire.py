"""The relay's request as it leaves the process, captured at a raw socket, and the client's bounds.

A tiny socket server (no HTTP library) records the bytes the GraphClient sends and answers with scripted
bytes: so the test sees every header and the exact body, and can trickle, oversize or hang up."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from capi_relay import __version__
from capi_relay.aws.secrets import Credentials
from capi_relay.deliver.client import GraphClient, StreamedBody
from capi_relay.deliver.policy import ErrorKind, GraphError

pytestmark = pytest.mark.integration

TOKEN = "EAAwirecapturetoken"  # a fake token for this test only
OK_BODY = b'{"events_received":1,"messages":[],"fbtrace_id":"Awire"}'


def ok(body: bytes = OK_BODY, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


@dataclass
class Captured:
    head: bytes
    body: bytes
    connection: int


@dataclass
class RawServer:
    """Accepts connections; for each request calls ``script(n, conn)`` where n counts requests overall."""

    script: Callable[[int, socket.socket], bool]  # returns False to close the connection
    requests: list[Captured] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        with contextlib.suppress(OSError):
            self._exchange(conn, number)

    def _exchange(self, conn: socket.socket, number: int) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                self.requests.append(Captured(head, body, number))
                if not self.script(len(self.requests), conn):
                    return

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[int, socket.socket], bool]], RawServer]]:
    servers: list[RawServer] = []

    def make(script: Callable[[int, socket.socket], bool]) -> RawServer:
        server = RawServer(script)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def answer(data: bytes) -> Callable[[int, socket.socket], bool]:
    def script(_: int, conn: socket.socket) -> bool:
        conn.sendall(data)
        return True

    return script


def test_the_request_on_the_wire(serve: Callable[..., RawServer]) -> None:
    # Given a raw socket that answers 200
    server = serve(answer(ok()))
    client = GraphClient(server.url, "v26.0")
    body = b'{"data":[{"event_name":"Purchase"}],"test_event_code":"T1"}'
    # When the client posts one body
    reply = client.send("123456", body, Credentials(TOKEN))
    # Then method, path, every header and the body bytes are exactly these
    assert reply.events_received == 1
    (captured,) = server.requests
    request_line, *lines = captured.head.decode("latin-1").split("\r\n")
    assert request_line == "POST /v26.0/123456/events HTTP/1.1"
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"duplicate header {name}"
        headers[name.lower()] = value.strip()
    assert headers == {
        "host": f"127.0.0.1:{server.port}",
        "accept-encoding": "identity",
        "content-type": "application/json",
        "user-agent": f"capi-relay/{__version__}",
        "authorization": f"Bearer {TOKEN}",
        "content-length": str(len(body)),
    }
    assert captured.body == body
    assert TOKEN not in request_line


@pytest.mark.parametrize(
    "token", ["EAA\r\nX-Injected: 1", "EAA\nabc", "EAA\x00abc", "EAA\x7fabc", "EAA\u2028abc", "EAAé€", ""]
)
def test_a_token_that_cannot_be_a_header_is_an_auth_error_and_never_sent(
    serve: Callable[..., RawServer], token: str
) -> None:
    server = serve(answer(ok()))
    client = GraphClient(server.url, "v26.0")
    with pytest.raises(GraphError) as info:
        client.send("123456", b'{"data":[]}', Credentials(token))
    assert info.value.kind is ErrorKind.AUTH
    assert info.value.reason == "secret_malformed"
    assert server.requests == []


def test_a_body_trickling_in_cannot_outlast_the_attempt_cap(serve: Callable[..., RawServer]) -> None:
    # Given a server that sends its 200 headers, then the body one byte every 0.2 s (11 s in all)
    def drip(_: int, conn: socket.socket) -> bool:
        conn.sendall(ok()[: -len(OK_BODY)])
        for byte in OK_BODY:
            conn.sendall(bytes([byte]))
            time.sleep(0.2)
        return True

    server = serve(drip)
    client = GraphClient(server.url, "v26.0", connect_timeout_s=0.5, read_timeout_s=1.0)
    started = time.monotonic()
    # When the caller allows 1 s for the attempt
    with pytest.raises(GraphError) as info:
        client.send("1", b"{}", Credentials(TOKEN), timeout_s=1.0)
    # Then the attempt ended near the cap (each byte arrived well within the read timeout)
    assert time.monotonic() - started < 3.0
    assert info.value.kind is ErrorKind.TRANSIENT
    assert "cap" in info.value.detail


def test_headers_trickling_in_cannot_outlast_the_attempt_cap(serve: Callable[..., RawServer]) -> None:
    def drip_headers(_: int, conn: socket.socket) -> bool:
        for byte in ok():
            conn.sendall(bytes([byte]))
            time.sleep(0.1)
        return True

    client = GraphClient(serve(drip_headers).url, "v26.0", read_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(GraphError) as info:
        client.send("1", b"{}", Credentials(TOKEN), timeout_s=1.0)
    assert time.monotonic() - started < 3.0
    assert info.value.kind is ErrorKind.TRANSIENT


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_response_body_over_the_cap_is_a_transient_error(serve: Callable[..., RawServer], declared: bool) -> None:
    size = 300_000

    def big(_: int, conn: socket.socket) -> bool:
        if declared:
            conn.sendall(ok(b" " * size))
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(size // 10_000):
                conn.sendall(b"%x\r\n" % 10_000 + b" " * 10_000 + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
        return True

    server = serve(big)
    client = GraphClient(server.url, "v26.0", max_response_bytes=100_000)
    with pytest.raises(GraphError) as info:
        client.send("1", b"{}", Credentials(TOKEN))
    assert info.value.kind is ErrorKind.TRANSIENT
    assert info.value.reason == "graph_transient_body_too_large"
    # and the connection was dropped, not reused: the next request opens a new one
    server.script = answer(ok())
    assert client.send("1", b"{}", Credentials(TOKEN)).events_received == 1
    assert server.connections == 2


def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(serve: Callable[..., RawServer]) -> None:
    # Given a server that answers the first request, then hangs up on the next one on that connection
    # without answering (as a server that closed the idle socket while the Lambda was frozen)
    def script(n: int, conn: socket.socket) -> bool:
        if n == 2:
            return False  # close without an answer
        conn.sendall(ok())
        return True

    server = serve(script)
    client = GraphClient(server.url, "v26.0")
    assert client.send("1", b"{}", Credentials(TOKEN)).events_received == 1
    # When the client posts again on its kept-alive connection
    reply = client.send("1", b"{}", Credentials(TOKEN))
    # Then that one send() succeeded: the request went again, at once, on a new connection
    assert reply.events_received == 1
    assert [c.connection for c in server.requests] == [1, 1, 2]


def test_a_fresh_connection_closed_without_an_answer_is_not_retried(serve: Callable[..., RawServer]) -> None:
    server = serve(lambda n, conn: False)
    client = GraphClient(server.url, "v26.0")
    with pytest.raises(GraphError) as info:
        client.send("1", b"{}", Credentials(TOKEN))
    assert info.value.kind is ErrorKind.TRANSIENT
    assert len(server.requests) == 1
    assert not info.value.unsent  # the request reached the server: its outcome is unknown


def test_a_refused_connection_is_known_unsent() -> None:
    # Given a port nothing listens on (bound, then closed)
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    client = GraphClient(f"http://127.0.0.1:{port}", "v26.0")
    with pytest.raises(GraphError) as info:
        client.send("1", b"{}", Credentials(TOKEN))
    # Then it is transient, and known never to have reached Meta (a retry is not a resend)
    assert info.value.kind is ErrorKind.TRANSIENT
    assert info.value.unsent


def test_usage_headers_become_retry_after(serve: Callable[..., RawServer]) -> None:
    usage = json.dumps({"1": [{"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 3}]})
    body = json.dumps({"error": {"message": "(#80004) too many calls", "type": "OAuthException", "code": 80004,
                                 "error_subcode": 2446079, "fbtrace_id": "Ax"}}).encode()  # fmt: skip
    head = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    server = serve(answer(head + b"X-Business-Use-Case-Usage: " + usage.encode() + b"\r\n\r\n" + body))
    with pytest.raises(GraphError) as info:
        GraphClient(server.url, "v26.0").send("1", b"{}", Credentials(TOKEN))
    assert info.value.kind is ErrorKind.THROTTLED
    assert info.value.retry_after_s == 180.0


def test_a_streamed_body_leaves_exactly_as_the_whole_body_does(serve: Callable[..., RawServer]) -> None:
    # Given a raw socket that answers 200, and one body of three 40 KB blocks (several socket writes)
    server = serve(answer(ok()))
    client = GraphClient(server.url, "v26.0")
    blocks = [b'{"data":[{"event_name":"', b"P" * 40_000, b'"}],"test_event_code":"T1"}']
    body = b"".join(blocks)
    # When the client posts it whole, then streamed
    client.send("123456", body, Credentials(TOKEN))
    client.send_streamed("123456", StreamedBody(len(body), lambda: iter(blocks)), Credentials(TOKEN))
    # Then both requests carry the same headers (Content-Length, never chunked) and the same bytes
    whole, streamed = server.requests
    assert streamed.body == whole.body == body
    assert sorted(streamed.head.split(b"\r\n")) == sorted(whole.head.split(b"\r\n"))
    assert b"content-length: %d" % len(body) in streamed.head.lower()
    assert b"transfer-encoding" not in streamed.head.lower()


def test_a_streamed_body_is_streamed_again_on_a_fresh_connection(serve: Callable[..., RawServer]) -> None:
    # Given a server that hangs up on the second request of its kept-alive connection without answering
    def script(n: int, conn: socket.socket) -> bool:
        if n == 2:
            return False
        conn.sendall(ok())
        return True

    server = serve(script)
    client = GraphClient(server.url, "v26.0")
    body = StreamedBody(len(b'{"data":[1]}'), lambda: iter([b'{"data":[', b"1]}"]))
    assert client.send_streamed("1", body, Credentials(TOKEN)).events_received == 1
    # When the client streams again on that connection
    reply = client.send_streamed("1", body, Credentials(TOKEN))
    # Then the retry on the new connection carried the whole body again
    assert reply.events_received == 1
    assert [(c.connection, c.body) for c in server.requests] == [(1, b'{"data":[1]}')] * 2 + [(2, b'{"data":[1]}')]

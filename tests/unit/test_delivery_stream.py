"""Streamed request bodies (chunking.request_stream + a StreamingGraphSender): the same bytes as request_body,
block by block, and the same delivery outcome as with a sender that takes the whole body."""

from __future__ import annotations

import json
import threading
import time

import pytest

from capi_relay.aws.secrets import Credentials
from capi_relay.deliver import chunking
from capi_relay.deliver.chunking import ChunkKey, Item, request_body, request_stream
from capi_relay.deliver.client import GraphReply, StreamedBody, StreamingGraphSender
from capi_relay.deliver.engine import Deliverer, DeliveryConfig
from capi_relay.ingest.model import Outbound
from tests.unit.fakes import FakeSender, FakeTokens


def items(n: int) -> list[Item]:
    return [
        Item(Outbound(f"m{i}", 0, "111", None, json.dumps({"event_id": f"e{i}", "pad": "é" * (i % 7)}).encode()), i)
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [1, 2, 3, 50])
@pytest.mark.parametrize("block_bytes", [1, 40, 64 * 1024])
@pytest.mark.parametrize("key", [("111", None, ()), ("111", "TEST1", (("namespace_id", "n"), ("upload_tag", "ü")))])
@pytest.mark.parametrize("credentials", [Credentials("t"), Credentials("t", "secret")])
def test_a_streamed_body_is_the_whole_body_block_by_block(
    n: int, block_bytes: int, key: ChunkKey, credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a chunk of n events and a block size
    monkeypatch.setattr(chunking, "BLOCK_BYTES", block_bytes)
    chunk = items(n)
    # When its body is streamed
    stream = request_stream(key, chunk, credentials)
    blocks = list(stream.blocks())
    # Then the blocks join to exactly request_body's bytes, the length says so, and every attempt gets them all
    whole = request_body(key, chunk, credentials)
    assert b"".join(blocks) == whole
    assert stream.length == len(whole)
    assert b"".join(stream.blocks()) == whole
    assert len(blocks) == 1 or block_bytes < len(whole)


class StreamingSender(FakeSender):
    """FakeSender that also takes streamed bodies (checks their length, records how they came)."""

    def __init__(self) -> None:
        super().__init__()
        self.streamed = 0
        self._count = threading.Lock()

    def send_streamed(
        self, pixel_id: str, body: StreamedBody, credentials: Credentials, timeout_s: float | None = None
    ) -> GraphReply:
        data = b"".join(body.blocks())
        assert len(data) == body.length
        with self._count:
            self.streamed += 1
        return self.send(pixel_id, data, credentials, timeout_s)


def test_a_streaming_sender_gets_streamed_bodies_with_the_same_outcome() -> None:
    # Given 2,500 events and two senders, one of which streams
    outbound = [i.outbound for i in items(2_500)]
    whole, streaming = FakeSender(), StreamingSender()
    assert isinstance(streaming, StreamingGraphSender)
    assert not isinstance(whole, StreamingGraphSender)
    reports = []
    for sender in (whole, streaming):
        deliverer = Deliverer(sender, FakeTokens(), DeliveryConfig(max_events_per_request=1_000))
        try:
            reports.append(deliverer.deliver(outbound, time.monotonic() + 60))
        finally:
            deliverer.close()
    # Then the streaming sender got every request streamed, and both got the same requests and outcome
    assert streaming.streamed == 3
    assert sorted(json.dumps(d) for _, d in streaming.requests) == sorted(json.dumps(d) for _, d in whole.requests)
    assert reports[0].accepted == reports[1].accepted == {(o.message_id, 0) for o in outbound}

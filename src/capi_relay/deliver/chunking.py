"""Chunking: outbound events grouped by (pixel, test_event_code, request_fields) and cut at Meta's caps (events
per request, bytes per body), and the request body of a chunk -- whole (:func:`request_body`) or streamed while
the socket is written (:func:`request_stream`). Pure: no I/O, never the token (only its ``appsecret_proof``).
The engine (``engine.py``) schedules and sends the chunks.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import add

from capi_relay.aws.secrets import Credentials
from capi_relay.deliver.client import StreamedBody
from capi_relay.ingest.model import Outbound

ChunkKey = tuple[str, str | None, tuple[tuple[str, str], ...]]  # pixel, test_event_code, request_fields


@dataclass(slots=True)
class Item:
    outbound: Outbound
    index: int  # position in the invocation's input: keeps order


@dataclass(slots=True)
class Chunk:
    key: ChunkKey
    items: list[Item]
    size: int = 0  # encoded bytes of the events, with separators
    overhead: int = 0  # bytes of the body around them (request_overhead)

    @property
    def pixel_id(self) -> str:
        return self.key[0]

    @property
    def test_event_code(self) -> str | None:
        return self.key[1]

    def body(self, credentials: Credentials) -> bytes:
        return request_body(self.key, self.items, credentials)


def request_body(key: ChunkKey, items: list[Item], credentials: Credentials) -> bytes:
    """``{"data":[...], test_event_code?, <request_fields>..., appsecret_proof?}`` (never the token)."""
    tail: dict[str, str] = dict(key[2])
    if key[1]:
        tail["test_event_code"] = key[1]
    proof = credentials.appsecret_proof
    if proof:
        tail["appsecret_proof"] = proof
    end = b"]}"
    if tail:
        end = b"]," + json.dumps(tail, separators=(",", ":"), ensure_ascii=False).encode()[1:-1] + b"}"
    if not items:
        return b'{"data":[' + end
    # One join, one copy of the events: the head and the end are glued onto the first and last event.
    parts = [item.outbound.encoded for item in items]
    parts[0] = b'{"data":[' + parts[0]
    parts[-1] += end
    return b",".join(parts)


# A streamed body is written in blocks of about this size, one sendall each: a request in flight holds one or two
# blocks (the next is joined while the last is still referenced), ~5 MB at HTTP_CONCURRENCY 10; 64 KiB blocks
# cost ~0.4 ms more CPU per 1.4 MB POST.
BLOCK_BYTES = 256 * 1024


def request_stream(key: ChunkKey, items: list[Item], credentials: Credentials) -> StreamedBody:
    """:func:`request_body`'s bytes as a :class:`StreamedBody`: the events are joined ~``BLOCK_BYTES`` at a
    time while the socket is written, so no whole body is held per request in flight (the events' bytes are
    held anyway until the invocation ends). A block is a run of whole events, cut where the bytes so far
    reach ``BLOCK_BYTES`` (found by bisection: one C-level join per block, no loop per event)."""
    events = [item.outbound.encoded for item in items]
    head = b'{"data":['
    end = request_body(key, [], credentials)[len(head) :]  # ']' + test code, request fields, proof + '}'
    # ends[i]: bytes of events[0..i] with a comma after each (the offset just past event i's comma)
    ends = list(accumulate(map(add, map(len, events), repeat(1))))
    length = len(head) + (ends[-1] - 1 if ends else 0) + len(end)

    def blocks() -> Iterator[bytes]:
        limit, start, prefix = BLOCK_BYTES, 0, head
        while start < len(events):
            before = ends[start - 1] if start else 0
            stop = min(bisect_left(ends, before + limit, start), len(events) - 1) + 1
            parts = events[start:stop]
            parts[0] = prefix + parts[0]
            if stop == len(events):
                parts[-1] += end
            yield b",".join(parts)
            start, prefix = stop, b","
        if not events:
            yield head + end

    return StreamedBody(length, blocks)


_PROOF_BYTES = len(b',"appsecret_proof":""') + 64  # an HMAC-SHA256 in hex


def request_overhead(key: ChunkKey) -> int:
    """Bytes of a request body of ``key`` besides its events: the test code and request fields as encoded,
    and room for an ``appsecret_proof``."""
    return len(request_body(key, [], Credentials(""))) + _PROOF_BYTES


class Chunker:
    """Groups events by chunk key in input order and cuts at the event and byte caps (the whole body, with
    its request_overhead). ``contiguous`` (FIFO) closes the open chunk whenever the key changes, so that
    chunks are runs of the input."""

    def __init__(self, max_events: int, max_bytes: int, *, contiguous: bool = False) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.contiguous = contiguous
        self.open: dict[ChunkKey, Chunk] = {}
        self.index = 0

    def fill(self, events: Iterator[Outbound]) -> list[Chunk] | None:
        """Take events from ``events`` until one closes chunks (a full one; in ``contiguous`` mode also the open
        ones a new key closes) and return those; None when ``events`` ends first (the open chunks stay for
        :meth:`flush`). One loop for the whole intake: no call, no list per event."""
        open_, contiguous, max_events, max_bytes = self.open, self.contiguous, self.max_events, self.max_bytes
        closed: list[Chunk] = []
        index = self.index
        for event in events:
            key: ChunkKey = (event.pixel_id, event.test_event_code, event.request_fields)
            size = len(event.encoded) + 1
            current = open_.get(key)
            if current is None and contiguous and open_:
                closed.extend(open_.values())
                open_.clear()
            elif current is not None and current.size + size + current.overhead > max_bytes:
                closed.append(open_.pop(key))  # an open chunk always holds an event: the first one always fits
                current = None
            if current is None:
                current = open_[key] = Chunk(key, [], overhead=request_overhead(key))
            current.items.append(Item(event, index))
            current.size += size
            index += 1
            if len(current.items) >= max_events:
                closed.append(open_.pop(key))
            if closed:
                self.index = index
                return closed
        self.index = index
        return None

    def flush(self) -> list[Chunk]:
        closed = list(self.open.values())
        self.open.clear()
        return closed


def chunk(outbound: Iterable[Outbound], max_events: int, max_bytes: int, *, contiguous: bool = False) -> list[Chunk]:
    """All chunks of ``outbound`` (full ones in the order they filled, then the open ones)."""
    chunker, source, chunks = Chunker(max_events, max_bytes, contiguous=contiguous), iter(outbound), []
    while (filled := chunker.fill(source)) is not None:
        chunks += filled
    return chunks + chunker.flush()

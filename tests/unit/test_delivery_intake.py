"""Delivery intake: chunk boundaries against a plain reference model, and the fail-closed path of an engine
error for every kind of input (a list, a one-shot generator, a generator that raises).

In-process fakes only (no sockets), as in test_delivery.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_relay.aws.secrets import Credentials
from capi_relay.deliver.chunking import Chunker, ChunkKey, Item, chunk, request_body, request_overhead, request_stream
from capi_relay.ingest.model import Outbound
from tests.unit.test_delivery import Clock, Sender, events, make_deliverer

KEYS: list[ChunkKey] = [
    ("111", None, ()),
    ("222", None, ()),
    ("111", "TEST1", ()),
    ("111", None, (("upload_tag", "x"),)),
]


def reference_chunks(outbound: list[Outbound], max_events: int, max_bytes: int, *, contiguous: bool) -> list[list[int]]:
    """The chunking contract written plainly: per key, in input order, a chunk closes when the next event would
    take it over the byte cap (body with its overhead) or when it reaches the event cap; ``contiguous`` closes
    every open chunk when the key changes. Chunks in the order they closed, then the open ones (first opened
    first). Each chunk as the input indexes of its events."""
    done: list[list[int]] = []
    open_: dict[ChunkKey, tuple[list[int], int]] = {}  # key -> (indexes, bytes of the events with separators)
    for n, o in enumerate(outbound):
        key = (o.pixel_id, o.test_event_code, o.request_fields)
        size = len(o.encoded) + 1
        if contiguous and open_ and key not in open_:
            done.extend(indexes for indexes, _ in open_.values())
            open_ = {}
        if key in open_ and open_[key][1] + size + request_overhead(key) > max_bytes:
            done.append(open_.pop(key)[0])
        indexes, total = open_.get(key, ([], 0))
        open_[key] = ([*indexes, n], total + size)
        if len(open_[key][0]) >= max_events:
            done.append(open_.pop(key)[0])
    return done + [indexes for indexes, _ in open_.values()]


def mixed(keys: list[int], pads: list[int]) -> list[Outbound]:
    out = []
    for n, (k, pad) in enumerate(zip(keys, pads, strict=True)):
        pixel, code, fields = KEYS[k]
        out.append(Outbound(f"m{n}", 0, pixel, code, b'{"event_id":"e%d","p":"%s"}' % (n, b"x" * pad), fields))
    return out


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, len(KEYS) - 1), st.integers(0, 400)), min_size=0, max_size=60),
    max_events=st.integers(1, 7),
    max_bytes=st.integers(600, 3000),
    contiguous=st.booleans(),
)
def test_chunks_match_the_reference_model(
    data: list[tuple[int, int]], max_events: int, max_bytes: int, contiguous: bool
) -> None:
    outbound = mixed([k for k, _ in data], [p for _, p in data])
    chunks = chunk(outbound, max_events, max_bytes, contiguous=contiguous)
    got = [[item.index for item in c.items] for c in chunks]
    assert got == reference_chunks(outbound, max_events, max_bytes, contiguous=contiguous)
    assert all(c.key == (outbound[c.items[0].index].pixel_id, outbound[c.items[0].index].test_event_code,
                         outbound[c.items[0].index].request_fields) for c in chunks)  # fmt: skip
    assert all(item.outbound is outbound[item.index] for c in chunks for item in c.items)


@pytest.mark.parametrize("contiguous", [False, True])
@pytest.mark.parametrize("room", [-1, 0, 1])
def test_a_body_exactly_at_the_byte_cap_is_one_chunk(room: int, contiguous: bool) -> None:
    # Given 10 events of one size and a byte cap of exactly 3 of them with the body around them (+/- a byte)
    outbound = mixed([0] * 10, [50] * 10)
    per_event = len(outbound[0].encoded) + 1
    max_bytes = request_overhead(KEYS[0]) + 3 * per_event + room
    # When chunked, then chunks hold 3 events when 3 fit exactly (or with a byte to spare), else 2
    got = [[item.index for item in c.items] for c in chunk(outbound, 1000, max_bytes, contiguous=contiguous)]
    assert [len(c) for c in got] == ([2, 2, 2, 2, 2] if room < 0 else [3, 3, 3, 1])
    assert got == reference_chunks(outbound, 1000, max_bytes, contiguous=contiguous)


def test_incremental_intake_returns_each_chunk_as_soon_as_it_fills() -> None:
    # Given 25 events of one key and a cap of 10 events, taken from a one-shot iterator
    outbound = events(25)
    source = iter(outbound)
    chunker = Chunker(10, 10**6)
    # When the chunker takes events until a chunk fills, three times
    first, second, rest = chunker.fill(source), chunker.fill(source), chunker.fill(source)
    # Then the first two calls each stop at a full chunk, without reading further
    assert [len(c.items) for c in first or []] == [10]
    assert [len(c.items) for c in second or []] == [10]
    assert [c.items[0].index for c in (first or []) + (second or [])] == [0, 10]
    # And the third finds the input exhausted: the open chunk is left for flush
    assert rest is None
    assert [[i.index for i in c.items] for c in chunker.flush()] == [list(range(20, 25))]


class FailingClock(Clock):
    """A clock that raises on its ``fail_at``-th read: a bug inside the engine's loop."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.reads = 0
        self.fail_at = fail_at

    def __call__(self) -> float:
        self.reads += 1
        if self.reads == self.fail_at:
            raise RuntimeError("clock bug")
        return super().__call__()


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["list", "generator"])
def test_an_engine_error_fails_every_record_not_proven_delivered(kind: str, fail_at: int) -> None:
    # Given 2,500 events (three chunks) and an engine whose clock breaks partway through the run
    outbound = events(2500)
    clock = FailingClock(fail_at)
    sender = Sender(clock=None)
    deliverer = make_deliverer(sender, clock)
    deadline = 10_000.0
    source = list(outbound) if kind == "list" else (o for o in outbound)
    try:
        # When delivered
        report = deliverer.deliver(source, deadline)
    finally:
        deliverer.close()
    # Then no exception escapes (the clock did break), and every message the engine took or was left to take
    # fails (internal_error): the ones accepted before the bug too (fail closed)
    assert clock.reads >= fail_at
    assert set(report.failed) == {o.message_id for o in outbound}
    assert {f.reason for f in report.failed.values()} == {"internal_error"}


def test_an_input_that_raises_fails_every_message_it_yielded() -> None:
    # Given an input generator that raises after yielding 1,500 events (its preparation broke)
    outbound = events(3000)

    def broken() -> Iterator[Outbound]:
        yield from outbound[:1500]
        raise RuntimeError("prepare bug")

    clock = Clock()
    deliverer = make_deliverer(Sender(), clock)
    try:
        report = deliverer.deliver(broken(), clock() + 60.0)
    finally:
        deliverer.close()
    # Then the 1,500 events it yielded are failed, whatever became of their requests (fail closed)
    assert set(report.failed) == {o.message_id for o in outbound[:1500]}
    assert {f.reason for f in report.failed.values()} == {"internal_error"}


def test_reference_model_is_not_vacuous() -> None:
    # The generated inputs do cut on each rule: the event cap, the byte cap and a key change (contiguous)
    rng = random.Random(3)
    outbound = mixed([rng.randrange(len(KEYS)) for _ in range(40)], [rng.randrange(400) for _ in range(40)])
    loose = reference_chunks(outbound, 1000, 10**6, contiguous=False)
    assert len(loose) == len(KEYS)
    assert len(reference_chunks(outbound, 3, 10**6, contiguous=False)) > len(loose)
    assert len(reference_chunks(outbound, 1000, 1200, contiguous=False)) > len(loose)
    assert len(reference_chunks(outbound, 1000, 10**6, contiguous=True)) > len(loose)


@settings(max_examples=200, deadline=None)
@given(
    pads=st.lists(st.integers(0, 300), min_size=0, max_size=40),
    block_bytes=st.integers(1, 4000),
    proof=st.booleans(),
)
def test_a_streamed_body_is_cut_into_blocks_of_whole_events_of_at_least_the_block_size(
    pads: list[int], block_bytes: int, proof: bool
) -> None:
    # Given a chunk of events of any sizes (none too) and any block size
    import capi_relay.deliver.chunking as chunking

    items = [Item(o, n) for n, o in enumerate(mixed([0] * len(pads), pads))]
    credentials = Credentials("t", "s" if proof else None)
    whole = request_body(KEYS[0], items, credentials)
    original = chunking.BLOCK_BYTES
    chunking.BLOCK_BYTES = block_bytes
    try:
        stream = request_stream(KEYS[0], items, credentials)
        blocks = list(stream.blocks())
    finally:
        chunking.BLOCK_BYTES = original
    # Then the blocks are the whole body, its length is declared, none is empty, every block but the last
    # reaches the block size, and each one ends where an event ends (the next starts with "," after the first)
    assert b"".join(blocks) == whole
    assert stream.length == len(whole)
    assert all(blocks)
    assert all(len(b) >= block_bytes for b in blocks[:-1])
    assert all(b.startswith(b",{") for b in blocks[1:])
    assert len(blocks) <= max(1, len(items))

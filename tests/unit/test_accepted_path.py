"""The accepted path (issue 21): the engine records what each request accepted (its items, no pair per event),
``DeliveryReport.accepted`` still reads as the set of (messageId, position) pairs Meta accepted, and
``Ledger.accept_events`` on the accepted events leaves every record exactly as ``Ledger.accept_all`` on the pairs."""

from __future__ import annotations

import json
import random
from collections.abc import Set as AbstractSet
from typing import Any

from capi_relay.deliver.chunking import Item
from capi_relay.deliver.client import GraphReply
from capi_relay.deliver.engine import Accepted, Deliverer, DeliveryConfig, DeliveryReport
from capi_relay.deliver.policy import ErrorKind, GraphError
from capi_relay.fate.ledger import Decision, Ledger
from capi_relay.ingest.model import Outbound
from tests.unit.fakes import FakeSender, FakeTokens


def outbound(message_id: str, position: int) -> Outbound:
    event = {"event_id": f"{message_id}/{position}", "event_name": "Purchase"}
    return Outbound(message_id, position, "111", None, json.dumps(event).encode())


# ------------------------------------------------------------------------------ the report's accepted set
def test_accepted_reads_as_the_set_of_pairs_of_every_request_it_recorded_even_after_a_read() -> None:
    # Given an empty proof
    accepted = Accepted()
    proof: AbstractSet[tuple[str, int]] = accepted  # as readers of DeliveryReport.accepted see it
    assert proof == set()
    assert set() == proof
    assert len(proof) == 0
    assert not accepted
    # When a request is recorded and read, then another one (an event of the first accepted again: a resend)
    accepted.add_request([Item(outbound("m1", 0), 0), Item(outbound("m2", 0), 1), Item(outbound("m2", 1), 2)])
    assert proof == {("m1", 0), ("m2", 0), ("m2", 1)}
    accepted.add_request([Item(outbound("m3", 0), 3), Item(outbound("m2", 1), 2)])
    # Then it is the set of every pair, each once, whichever way it is read
    expected = {("m1", 0), ("m2", 0), ("m2", 1), ("m3", 0)}
    assert proof == expected
    assert expected == proof
    assert len(proof) == 4
    assert set(proof) == expected
    assert sorted(proof) == sorted(expected)
    assert ("m3", 0) in proof
    assert ("m3", 1) not in proof
    assert proof != expected - {("m1", 0)}
    assert proof != expected | {("m4", 0)}
    # and its events are every accepted event, request by request (the resend twice)
    assert [(o.message_id, o.position) for o in accepted.events()] == [("m1", 0), ("m2", 0), ("m2", 1), ("m3", 0),
                                                                       ("m2", 1)]  # fmt: skip
    # and a report holding it equals one holding the plain set
    assert DeliveryReport(accepted=accepted) == DeliveryReport(accepted=expected)
    assert DeliveryReport(accepted=accepted) != DeliveryReport(accepted=expected - {("m3", 0)})
    assert DeliveryReport().accepted == set()


def test_the_engines_report_accepts_exactly_the_events_of_the_requests_meta_answered_2xx() -> None:
    # Given 30 events of 12 records, chunks of 4, and Meta rejecting two events (each chunk holding one is searched)
    events = [outbound(f"m{i % 12}", i // 12) for i in range(30)]
    bad = {"m3/0", "m7/1"}
    answered: list[list[str]] = []

    def behaviour(pixel_id: str, data: list[dict[str, Any]]) -> GraphReply | Exception:
        ids = [e["event_id"] for e in data]
        if bad.intersection(ids):
            return GraphError(ErrorKind.INVALID, http_status=400, code=100, subcode=2804036)
        answered.append(ids)
        return GraphReply(len(data), "trace", 1.0)

    deliverer = Deliverer(FakeSender(behaviour), FakeTokens(), DeliveryConfig(max_events_per_request=4),
                          sleep=lambda _: None, rng=random.Random(3))  # fmt: skip
    try:
        report = deliverer.deliver(events, deliverer.clock() + 60)
    finally:
        deliverer.close()
    # Then the proof is the pairs of the events in 2xx answers: every event but the two bad ones
    pairs = {tuple(event_id.split("/")) for ids in answered for event_id in ids}
    assert {(m, int(p)) for m, p in pairs} == report.accepted
    assert report.accepted == {(o.message_id, o.position) for o in events} - {("m3", 0), ("m7", 1)}
    assert set(report.rejected) == {("m3", 0), ("m7", 1)}
    assert report.delivered_events == len(report.accepted) == 28


# ----------------------------------------------------------------------------------------- the ledger
def _ledger(sizes: dict[str, int | None], rng: random.Random) -> Ledger:
    """Records of ``sizes`` events (None: never read), some with a rejection or a failure (drawn from ``rng``)."""
    book = Ledger(sizes)
    for message_id, size in sizes.items():
        if size is not None:
            book.expect(message_id, size)
        roll = rng.random()
        if roll < 0.15:
            book.reject(message_id, rng.randrange(max(size or 1, 1)), "invalid_value")
        elif roll < 0.25:
            book.fail(message_id, "graph_transient_http503")
    return book


def _fates(book: Ledger) -> list[tuple[str, Decision | None, bool]]:
    rest = book.decide_delivered()
    for _, message_id in rest:
        book.decide(message_id, quarantine=True, last_chance=False)
    return book.outcomes(delivered=True)


def test_accept_events_leaves_every_record_as_accept_all_on_the_pairs() -> None:
    rng = random.Random(21)
    delivered = 0
    for _ in range(2_000):
        sizes: dict[str, int | None] = {f"m{i}": rng.choice([None, 0, 1, 1, 1, 2, 3]) for i in range(rng.randint(1, 5))}
        # accepted events: real ones, twice, of unknown records, at positions no record has
        pairs = [(rng.choice([*sizes, "stranger"]), rng.randint(-1, 3)) for _ in range(rng.randint(0, 10))]
        pairs += [(m, p) for m, size in sizes.items() if size and rng.random() < 0.6 for p in range(size)]
        rng.shuffle(pairs)
        seed = rng.random()
        by_pairs, by_events = _ledger(sizes, random.Random(seed)), _ledger(sizes, random.Random(seed))
        by_pairs.accept_all(pairs)
        by_events.accept_events([outbound(m, p) for m, p in pairs])
        fates = _fates(by_events)
        assert fates == _fates(by_pairs), (sizes, pairs)
        assert by_events.unsettled() == by_pairs.unsettled()
        delivered += sum(settled for _, _, settled in fates)
    assert delivered > 1_000  # the draw settles many records, not only failures


def test_an_event_accepted_twice_or_for_a_stranger_or_out_of_range_never_completes_a_record() -> None:
    book = Ledger(["two", "one"])
    book.expect("two", 2)
    book.expect("one", 1)
    book.accept_events([outbound("two", 0), outbound("two", 0), outbound("stranger", 1), outbound("two", 2),
                        outbound("one", 1), outbound("one", -1)])  # fmt: skip
    assert book.decide_delivered() == [(0, "two"), (1, "one")]
    book.accept_events([outbound("two", 1), outbound("one", 0)])
    assert book.decide_delivered() == []
    assert book.unsettled() == []

"""The bad-event search as a pure state machine: driven by an oracle, no threads, no sockets, no clock."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_relay.deliver.search import SEARCH_POOLED_FROM, Probe, Search, search_request_bound, valve_request_bound

Oracle = Callable[[Probe], str | None]  # None: accepted; a string: the rejection's signature


def bad_oracle(bad: set[int], signature: Callable[[int], str] = lambda i: f"2804{i}") -> Oracle:
    def answer(probe: Probe) -> str | None:
        hits = [i for i in probe.items if i in bad]
        return signature(hits[0]) if hits else None

    return answer


def drive(
    search: Search[str], oracle: Oracle, *, groups: dict[int, int] | None = None, shuffle: random.Random | None = None
) -> list[Probe]:
    """Send every probe the search asks for (in a shuffled order when ``shuffle``), answer via ``oracle``;
    in FIFO mode check each probe against what is decided so far. Returns the probes sent."""
    sent: list[Probe] = []
    inflight: list[Probe] = []
    decided: set[int] = set()
    while True:
        inflight.extend(search.probes())
        if not inflight:
            break
        if shuffle is not None:
            shuffle.shuffle(inflight)
        probe = inflight.pop()
        if groups is not None:
            assert len(inflight) == 0, "FIFO: one probe at a time"
            members = set(probe.items)
            for item in probe.items:
                earlier = [i for i in groups if i < item and groups[i] == groups[item]]
                assert all(i in decided or i in members for i in earlier), (probe, item)
        sent.append(probe)
        signature = oracle(probe)
        if signature is None:
            search.accepted(probe)
        else:
            search.rejected(probe, signature, signature)
        if signature is None or len(probe.items) == 1:  # accepted, or one event found bad
            decided.update(probe.items)
        r = search.result
        decided.update(r.bad, r.good, r.blocked, r.undecided)
    assert search.done
    return sent


def start(n: int, bad: set[int], **kw: object) -> Search[str]:
    first = bad_oracle(bad)(Probe(-1, tuple(range(n))))
    assert first is not None
    return Search(range(n), first, first, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- unordered
@settings(max_examples=300, deadline=None)
@given(st.integers(1, 600).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1))),
       st.integers(0, 2**32))  # fmt: skip
def test_unordered_search_finds_exactly_the_bad_events(case: tuple[int, set[int]], seed: int) -> None:
    n, bad = case
    search = start(n, bad)
    sent = drive(search, bad_oracle(bad), shuffle=random.Random(seed))
    r = search.result
    assert set(r.bad) == bad
    assert r.good == set(range(n)) - bad
    assert not r.undecided
    assert not r.blocked
    assert not r.request_level
    if len(bad) < SEARCH_POOLED_FROM:
        assert len(sent) + 1 <= search_request_bound(len(bad), n)


@pytest.mark.parametrize("k", [SEARCH_POOLED_FROM, 10, 30])
def test_many_bad_events_stay_near_the_bound(k: int) -> None:
    for seed in range(5):
        bad = set(random.Random(100 + seed).sample(range(1000), k))
        search = start(1000, bad)
        sent = drive(search, bad_oracle(bad))
        assert set(search.result.bad) == bad
        assert len(sent) + 1 <= search_request_bound(k, 1000) * 1.1


def test_every_event_bad_with_distinct_errors_costs_about_2n() -> None:
    n = 200
    search = start(n, set(range(n)))
    sent = drive(search, bad_oracle(set(range(n))))
    assert len(search.result.bad) == n
    assert len(sent) + 1 <= 2.2 * n


def test_a_single_event_chunk_is_found_bad_at_once() -> None:
    search = Search([5], "e", "sig")
    assert search.done
    assert search.probes() == []
    assert search.result.bad == {5: "e"}


# ---------------------------------------------------------------------------------------- FIFO
@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 300).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.sets(st.integers(0, n - 1), min_size=1),
            st.lists(st.integers(0, 4), min_size=n, max_size=n),
        )
    ),
    st.booleans(),
)
def test_fifo_prefix_search_keeps_group_order_and_finds_the_bad_events(
    case: tuple[int, set[int], list[int]], block: bool
) -> None:
    n, bad, group_of = case
    groups = dict(enumerate(group_of))
    search = start(n, bad, groups=groups, block_on_bad=block)
    sent = drive(search, bad_oracle(bad), groups=groups)
    r = search.result
    assert not r.undecided
    assert not r.request_level
    # Every item ends exactly once: good, bad or blocked
    assert r.good | set(r.bad) | r.blocked == set(range(n))
    assert not (r.good & set(r.bad))
    assert not (r.good & r.blocked)
    assert not (set(r.bad) & r.blocked)
    assert set(r.bad) <= bad
    assert r.good.isdisjoint(bad)
    if block:
        # the earliest bad event of each group is found; everything after it in that group is blocked
        for g in set(group_of):
            members = [i for i in range(n) if groups[i] == g]
            first_bad = next((i for i in members if i in bad), None)
            if first_bad is not None:
                assert first_bad in r.bad
                assert {i for i in members if i > first_bad} <= r.blocked
    else:
        assert set(r.bad) == bad
        assert not r.blocked
        if len(bad) < SEARCH_POOLED_FROM:
            assert len(sent) + 1 <= search_request_bound(len(bad), n)


def test_fifo_probe_after_an_undecided_probe_skips_the_rest_of_its_group() -> None:
    # Given groups a (0, 2, 4) and b (1, 3, 5), event 4 bad; the first probe cannot be decided
    groups = {0: "a", 1: "b", 2: "a", 3: "b", 4: "a", 5: "b"}
    search: Search[str] = Search(range(6), "e", "sig", groups=groups)
    (probe,) = search.probes()
    assert probe.items == (0, 1, 2)
    search.undecided(probe, "timeout")
    # Then group a is blocked after 0 and group b after 1; nothing else is sent
    assert search.result.undecided == {0: "timeout", 1: "timeout", 2: "timeout"}
    assert search.result.blocked == {3, 4, 5}
    assert search.done


# ---------------------------------------------------------------------------------------- valve
def test_safety_valve_stops_when_single_events_fail_identically_and_nothing_was_accepted() -> None:
    n = 64
    search = start(n, set(range(n)))
    sent = drive(search, bad_oracle(set(range(n)), signature=lambda i: "same"))
    r = search.result
    assert search.tripped
    assert not r.bad
    assert not r.good
    assert set(r.request_level) == set(range(n))
    assert len(sent) + 1 <= valve_request_bound(n)  # stopped after VALVE_STREAK singles and one control round


def test_valve_does_not_trip_once_an_event_was_accepted() -> None:
    bad = {5, 6, 7, 40}  # [0, 4) is accepted before the third single is rejected
    search = start(64, bad)
    drive(search, bad_oracle(bad, signature=lambda i: "same"))
    assert not search.tripped
    assert set(search.result.bad) == bad


# ---------------------------------------------------------------------------------------- stopping
def test_undecided_probe_gives_its_items_up_and_its_sibling_is_still_searched() -> None:
    bad = {7}
    search = start(16, bad)
    (probe,) = search.probes()
    assert probe.items == tuple(range(8))
    search.undecided(probe, "graph_transient")
    drive(search, bad_oracle(bad))
    r = search.result
    assert r.undecided == dict.fromkeys(range(8), "graph_transient")
    assert r.good == set(range(8, 16))
    assert not r.bad


def test_abandon_sends_nothing_more_and_gives_up_what_is_not_decided() -> None:
    bad = {9, 12}
    search = start(16, bad)
    (probe,) = search.probes()
    assert probe.items == tuple(range(8))
    # When the search is abandoned while its probe is in flight, and the probe then comes back accepted
    search.abandon("deadline")
    search.accepted(probe)
    # Then its items are good, its sibling (known bad, not split) is given up with the chunk's failure
    assert search.done
    assert search.probes() == []
    r = search.result
    assert r.good == set(range(8))
    assert r.undecided == dict.fromkeys(range(8, 16), "28049")
    assert not r.bad

"""The search's safety valve (soak finding 5): genuinely bad events probed first must not make their valid
neighbours fail; an error Meta returns whatever the events must still stop the search within a bound.

Pure: the search is driven by an oracle, no threads, sockets or clock. An oracle is Meta for the test: it
rejects a probe holding a bad event (with the bad event's signature), or -- request-level -- every probe."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_relay.deliver.search import VALVE_STREAK, Probe, Search, valve_controls, valve_request_bound

Oracle = Callable[[Probe], str | None]  # None: accepted; a string: the rejection's signature
SAME = "100/2804036"


def event_level(bad: set[int], signature: Callable[[int], str] = lambda i: SAME) -> Oracle:
    def answer(probe: Probe) -> str | None:
        hits = [i for i in probe.items if i in bad]
        return signature(hits[0]) if hits else None

    return answer


def request_level(probe: Probe) -> str | None:
    return SAME


def drive(search: Search[str], oracle: Oracle, *, fifo: bool = False, seed: int | None = None) -> list[Probe]:
    """Send what the search asks for (answered in a shuffled order when ``seed``); FIFO: one probe at a time."""
    rng = random.Random(seed)
    sent: list[Probe] = []
    inflight: list[Probe] = []
    while True:
        inflight.extend(search.probes())
        if not inflight:
            break
        if fifo:
            assert len(inflight) == 1, "FIFO: one probe at a time"
        probe = inflight.pop(rng.randrange(len(inflight)) if seed is not None else 0)
        sent.append(probe)
        signature = oracle(probe)
        if signature is None:
            search.accepted(probe)
        else:
            search.rejected(probe, f"why{probe.items[0]}", signature)
    assert search.done
    return sent


def start(n: int, oracle: Oracle, **kw: object) -> Search[str]:
    first = oracle(Probe(-1, tuple(range(n))))
    assert first is not None, "the chunk must be rejected to be searched"
    return Search(range(n), "chunk", first, **kw)  # type: ignore[arg-type]


def assert_exact(search: Search[str], n: int, bad: set[int]) -> None:
    r = search.result
    assert not search.tripped
    assert not r.request_level
    assert set(r.bad) == bad
    assert r.good == set(range(n)) - bad
    assert not r.undecided
    assert not r.blocked


# ------------------------------------------------------------------------------- bad events probed first
@pytest.mark.parametrize(
    ("n", "k"),
    [(n, k) for n in (4, 10, 16, 64, 1000) for k in (VALVE_STREAK, VALVE_STREAK + 2, 8) if k < n],
)
def test_bad_events_probed_first_are_rejected_and_their_valid_neighbours_delivered(n: int, k: int) -> None:
    # Given a redriven DLQ of one pixel: k letters Meta rejects with one identical error come first, then
    # valid events (the search's halving probes the first events alone first: the streak arms the valve)
    bad = set(range(k))
    search = start(n, event_level(bad))
    drive(search, event_level(bad))
    # Then only the bad ones are found bad, every valid one is accepted, nothing is request-level
    assert_exact(search, n, bad)


@pytest.mark.parametrize("n", [4, 10, 40])
@pytest.mark.parametrize("block", [False, True])
def test_fifo_bad_events_first_do_not_fail_the_valid_events_behind_them(n: int, block: bool) -> None:
    # Given a FIFO chunk whose first three events (groups 0-2) are rejected identically, then valid events
    groups = {i: i % 4 for i in range(n)}
    bad = {0, 1, 2}
    search = start(n, event_level(bad), groups=groups, block_on_bad=block)
    drive(search, event_level(bad), fifo=True)
    r = search.result
    assert not search.tripped
    assert not r.request_level
    assert set(r.bad) == bad
    group_3 = {i for i in range(n) if i % 4 == 3}
    if block:  # the rest of groups 0-2 waits behind their bad event (order), group 3 is delivered
        assert r.blocked == set(range(3, n)) - group_3
        assert r.good == group_3
    else:
        assert r.good == set(range(3, n))


def test_fifo_one_group_bad_first_then_valid_is_delivered_in_order() -> None:
    n = 12
    bad = {0, 1, 2, 3}
    search = start(n, event_level(bad), groups=dict.fromkeys(range(n), "g"), block_on_bad=False)
    sent = drive(search, event_level(bad), fifo=True)
    assert_exact(search, n, bad)
    # every probe was a prefix of what was undecided: the first event of each probe is the earliest left
    firsts = [p.items[0] for p in sent]
    assert firsts == sorted(firsts)


def test_dense_bad_events_interleaved_with_valid_ones_are_found_exactly() -> None:
    # Given half of a redriven batch bad with one error, interleaved (the soak's phase 2, seed 7)
    n = 10
    bad = {0, 1, 2, 4, 6, 9}
    search = start(n, event_level(bad))
    drive(search, event_level(bad))
    assert_exact(search, n, bad)


def test_a_control_rejected_with_another_error_turns_the_valve_off() -> None:
    # Given every event bad: three with one error first, the rest with their own errors
    n = 16
    bad = set(range(n))

    def signature(i: int) -> str:
        return SAME if i < 3 else f"2804{i:03d}"

    search = start(n, event_level(bad, signature))
    drive(search, event_level(bad, signature))
    # Then the errors depend on the events: every one is blamed, nothing is request-level
    assert_exact(search, n, bad)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(2, 300).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1))),
    st.integers(0, 2**16),
    st.booleans(),
)
def test_the_valve_trips_only_when_no_probe_was_accepted_and_else_the_search_is_exact(
    case: tuple[int, set[int]], seed: int, fifo: bool
) -> None:
    # Given any bad set, all rejected with one error (the valve's worst case), any answer order
    n, bad = case
    kw: dict[str, object] = {"groups": {i: i % 4 for i in range(n)}, "block_on_bad": False} if fifo else {}
    search = start(n, event_level(bad), **kw)
    sent = drive(search, event_level(bad), fifo=fifo, seed=None if fifo else seed)
    r = search.result
    if search.tripped:
        # Then a trip means every probe, the controls included, held a bad event: the valve could not tell
        # the chunk from a request-level error, and it blamed nothing
        assert all(event_level(bad)(p) is not None for p in sent)
        assert not r.good
        assert not r.bad
        assert set(r.request_level) == set(range(n))
        # the controls tried valve_controls(n) events alone beyond the streak (or every event left)
        singles = {p.items[0] for p in sent if len(p.items) == 1}
        assert len(singles) >= min(n, VALVE_STREAK + valve_controls(n))
    else:
        assert_exact(search, n, bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(6, 600).flatmap(lambda n: st.tuples(st.just(n), st.integers(VALVE_STREAK, n // 2))),
       st.integers(0, 2**16), st.booleans())  # fmt: skip
def test_a_run_of_bad_events_first_never_fails_the_valid_half_behind_it(
    case: tuple[int, int], seed: int, fifo: bool
) -> None:
    # Given the first k events (up to half the chunk) rejected with one identical error, the rest valid
    n, k = case
    if fifo:  # order allows no spread: the controls are the next events of their groups, in order
        k = min(k, VALVE_STREAK + valve_controls(n))
    bad = set(range(k))
    kw: dict[str, object] = {"groups": {i: i % 3 for i in range(n)}, "block_on_bad": False} if fifo else {}
    search = start(n, event_level(bad), **kw)
    drive(search, event_level(bad), fifo=fifo, seed=None if fifo else seed)
    # Then the controls reach the valid events (unordered: the last control lies in the last part of what
    # is undecided; FIFO: a valid event is next in order, or the rest is all valid)
    assert_exact(search, n, bad)


# ------------------------------------------------------------------------------- request-level still trips
@settings(max_examples=200, deadline=None)
@given(st.integers(VALVE_STREAK, 1000), st.integers(0, 2**16))
def test_a_request_level_rejection_trips_within_the_bound_and_blames_nothing(n: int, seed: int) -> None:
    # (a chunk of fewer than VALVE_STREAK events is searched to the end: at most 3 requests)
    search = start(n, request_level)
    sent = drive(search, request_level, seed=seed)
    r = search.result
    assert search.tripped
    assert not r.bad
    assert not r.good
    assert set(r.request_level) == set(range(n))
    assert len(sent) + 1 <= valve_request_bound(n)


@settings(max_examples=200, deadline=None)
@given(st.integers(VALVE_STREAK, 400), st.integers(1, 6), st.booleans())
def test_fifo_request_level_rejection_trips_within_the_bound(n: int, groups: int, block: bool) -> None:
    # (blocking needs VALVE_STREAK groups for a streak: a bad event blocks the rest of its group)
    if block:
        groups = max(groups, VALVE_STREAK)
    search = start(n, request_level, groups={i: i % groups for i in range(n)}, block_on_bad=block)
    sent = drive(search, request_level, fifo=True)
    r = search.result
    assert search.tripped
    assert not r.bad
    assert not r.good
    assert set(r.request_level) | r.blocked == set(range(n))
    assert len(sent) + 1 <= valve_request_bound(n)


def test_request_level_rejection_costs_one_control_round_more_than_the_streak() -> None:
    n = 64
    search = start(n, request_level)
    sent = drive(search, request_level)
    # the control round: ceil(log2(64)) = 6 events alone, spread over the undecided ones, and the rest whole
    k = valve_controls(n)
    assert k == 6
    controls = sent[-(k + 1) :]
    assert [len(p.items) for p in controls] == [1] * k + [n - VALVE_STREAK - k]
    spread = [p.items[0] for p in controls[:k]]
    assert spread == sorted(spread)
    step = (n - VALVE_STREAK) / k
    assert all(VALVE_STREAK + j * step <= spread[j] < VALVE_STREAK + (j + 1) * step for j in range(k))
    assert search.tripped
    assert len(sent) + 1 <= valve_request_bound(n)


def test_the_control_count_is_what_isolating_one_more_event_costs() -> None:
    assert [valve_controls(n) for n in (1, 3, 8, 9, 10, 64, 1000)] == [3, 3, 3, 4, 4, 6, 10]
    assert valve_request_bound(1000) == 3 * 11 + 1 + 10 + 1


# ------------------------------------------------------------------------------- stopping during controls
def test_abandon_during_the_control_round_gives_the_controls_up_and_trips_nothing() -> None:
    n = 32
    search = start(n, request_level)
    pending: list[Probe] = []
    while True:
        pending.extend(search.probes())
        if len(pending) > 1:  # the control round is out
            break
        probe = pending.pop(0)
        search.rejected(probe, f"why{probe.items[0]}", SAME)
    search.abandon("deadline")
    for probe in pending:
        search.rejected(probe, "late", SAME)
    r = search.result
    assert search.done
    assert not search.tripped
    assert not r.request_level
    assert set(r.bad) | set(r.undecided) == set(range(n))
    assert all(r.undecided[i] == "late" for p in pending for i in p.items)


def test_an_undecided_control_gives_its_events_up_and_an_accepted_one_turns_the_valve_off() -> None:
    n = 32
    bad = {0, 1, 2}
    search = start(n, event_level(bad))
    pending: list[Probe] = []
    while True:
        pending.extend(search.probes())
        if len(pending) > 1:
            break
        probe = pending.pop(0)
        search.rejected(probe, f"why{probe.items[0]}", SAME)
    timed_out, *others = pending
    search.undecided(timed_out, "timeout")
    for probe in others:
        search.accepted(probe)
    r = search.result
    assert search.done
    assert not search.tripped
    assert set(r.bad) == bad
    assert r.undecided == dict.fromkeys(timed_out.items, "timeout")
    assert r.good == set(range(n)) - bad - set(timed_out.items)


@pytest.mark.parametrize("bad_groups", [1, 2])
def test_fifo_controls_reach_a_group_behind_a_long_run_of_bad_events(bad_groups: int) -> None:
    # Given a FIFO chunk whose first groups (ten events each, contiguous) are all rejected with one identical
    # error and whose last group is valid: more bad events than the valve has controls
    n = 10 * (bad_groups + 1)
    groups = {i: f"g{i // 10}" for i in range(n)}
    bad = set(range(10 * bad_groups))
    assert len(bad) - VALVE_STREAK > valve_controls(n)
    search = start(n, event_level(bad), groups=groups, block_on_bad=False)
    drive(search, event_level(bad), fifo=True)
    # Then a control is taken from each group not tried yet (its earliest event), so one reaches the valid group:
    # the valve turns off and the search is exact -- the valid events are not blamed as request-level
    assert_exact(search, n, bad)

"""The bad-event search's edges (issue 17, mutation testing): mode thresholds, the request bound's exact value,
stopping (abandon) with probes ready or in flight and answered afterwards, the safety valve's streak and what
it reports, FIFO blocking by default and the dense FIFO mode. Pure: no threads, sockets or clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from capi_relay.deliver.search import (
    SEARCH_PLAIN_FROM,
    SEARCH_POOLED_FROM,
    VALVE_STREAK,
    Mode,
    Probe,
    Search,
    mode_for,
    search_request_bound,
    valve_controls,
)


# ------------------------------------------------------------------------------------------- modes
def test_mode_thresholds_are_inclusive() -> None:
    assert mode_for(SEARCH_POOLED_FROM - 1, 0) is Mode.BINARY
    assert mode_for(SEARCH_POOLED_FROM, 100) is Mode.POOLED  # 4 found among 104 decided: not dense
    assert mode_for(SEARCH_PLAIN_FROM, 10_000) is Mode.PLAIN  # 16 found: plain however sparse
    assert mode_for(SEARCH_PLAIN_FROM - 1, 10_000) is Mode.POOLED
    assert mode_for(SEARCH_POOLED_FROM, 12) is Mode.PLAIN  # exactly a quarter of 16 decided were bad
    assert mode_for(SEARCH_POOLED_FROM, 13) is Mode.POOLED  # just under a quarter


def test_request_bound_values() -> None:
    assert search_request_bound(0, 1000) == 1
    assert search_request_bound(3, 1) == 1  # one event: the first request decides it
    assert search_request_bound(1, 2) == 3  # 1 * (1 + 1) + 1
    assert search_request_bound(2, 8) == 9  # 2 * (3 + 1) + 1
    assert search_request_bound(3, 1000) == 34  # 3 * (10 + 1) + 1


# ------------------------------------------------------------------------------------------- driving
def answer_all(search: Search[str], bad: set[int], signature: str | None = None) -> list[Probe]:
    """Answer every probe in order (first asked, first answered): rejected when it holds a bad item, with
    the failure ``why<first bad item>`` and the signature ``signature`` (default: that failure)."""
    sent: list[Probe] = []
    pending: list[Probe] = []
    while True:
        pending.extend(search.probes())
        if not pending:
            return sent
        probe = pending.pop(0)
        sent.append(probe)
        hits = [i for i in probe.items if i in bad]
        if hits:
            why = f"why{hits[0]}"
            search.rejected(probe, why, signature if signature is not None else why)
        else:
            search.accepted(probe)


# ---------------------------------------------------------------------------------------- stopping
def test_abandon_before_the_ready_probes_were_taken_gives_up_probe_and_sibling_with_the_chunks_failure() -> None:
    # Given a rejected chunk whose first split is ready but not yet sent
    search: Search[str] = Search(range(16), "chunk", "sig")
    # When the search is abandoned before anyone took the probes
    search.abandon("deadline")
    # Then nothing is sent, and all 16 items are given up with the failure that made them known bad
    assert search.probes() == []
    assert search.done
    assert search.result.undecided == dict.fromkeys(range(16), "chunk")
    assert not search.result.good
    assert not search.result.bad


def test_a_probe_rejected_after_abandon_gives_up_its_items_with_its_failure_and_its_sibling_without() -> None:
    search: Search[str] = Search(range(16), "chunk", "sig")
    (probe,) = search.probes()
    assert probe.items == tuple(range(8))
    search.abandon("deadline")
    assert not search.done  # the probe in flight must still be reported
    search.rejected(probe, "late", "sig")
    assert search.done
    assert search.probes() == []
    r = search.result
    assert r.undecided == {**dict.fromkeys(range(8), "late"), **dict.fromkeys(range(8, 16), None)}
    assert not r.bad


def test_a_probe_undecided_after_abandon_gives_up_probe_and_sibling_with_the_chunks_failure() -> None:
    search: Search[str] = Search(range(16), "chunk", "sig")
    (probe,) = search.probes()
    search.abandon("deadline")
    search.undecided(probe, "timeout")
    assert search.done
    assert search.result.undecided == dict.fromkeys(range(16), "chunk")


def test_an_undecided_probe_without_a_sibling_after_abandon_is_given_up_with_its_own_failure() -> None:
    # PLAIN mode sends probes without siblings: all events bad, distinct errors
    n = 64
    search: Search[str] = Search(range(n), "chunk", "sig")
    pending: list[Probe] = []
    while True:
        pending.extend(search.probes())
        if len(pending) >= 2:
            break
        probe = pending.pop(0)
        search.rejected(probe, f"why{probe.items[0]}", f"sig{probe.items[0]}")
    search.abandon("deadline")
    for probe in pending:
        search.undecided(probe, "timeout")
    assert search.done
    r = search.result
    for probe in pending:
        for item in probe.items:
            assert r.undecided[item] in ("timeout", "chunk") or item in r.bad
    assert set(r.bad) | set(r.undecided) == set(range(n))


def test_abandon_with_known_bad_sets_waiting_gives_each_up_with_its_own_failure() -> None:
    # Given all 64 events bad with distinct errors: once 4 are found the search goes PLAIN and sends both
    # halves of a split, so one rejected half can wait (known bad) while the other is in flight
    n = 64
    search: Search[str] = Search(range(n), "chunk", "sig0")
    pending: list[Probe] = []
    while True:
        pending.extend(search.probes())
        multi = [p for p in pending if len(p.items) > 1]
        if len(pending) >= 2 and multi:
            break
        probe = pending.pop(0)
        search.rejected(probe, f"why{probe.items[0]}", f"sig{probe.items[0]}")
    waiting = multi[0]
    pending.remove(waiting)
    search.rejected(waiting, "known-bad", "sig-known")  # now known bad, not split: the other probe is in flight
    assert search.probes() == []
    # When the search is abandoned, then the late answers come in
    search.abandon("deadline")
    for probe in pending:
        search.accepted(probe)
    # Then the known-bad set is given up with its own failure, not the abandon's
    r = search.result
    assert search.done
    assert all(r.undecided[i] == "known-bad" for i in waiting.items)
    assert set(r.bad) | set(r.undecided) | r.good == set(range(n))


# ------------------------------------------------------------------------------------------- valve
def test_two_identical_single_rejections_do_not_trip_the_valve() -> None:
    # Events 0 and 1 are bad with the same signature; they are found as singles before any accept
    bad = {0, 1}
    search: Search[str] = Search(range(64), "why0", "same")
    answer_all(search, bad, signature="same")
    assert not search.tripped
    assert set(search.result.bad) == bad
    assert search.result.good == set(range(2, 64))


def test_the_third_identical_single_rejection_arms_the_valve_and_rejected_controls_trip_it() -> None:
    n = 32
    search: Search[str] = Search(range(n), "why0", "same")
    sent = answer_all(search, set(range(n)), signature="same")
    r = search.result
    assert search.tripped
    assert not r.bad
    assert set(r.request_level) == set(range(n))
    singles = [p for p in sent if len(p.items) == 1]
    k = valve_controls(n)
    assert k == 5  # ceil(log2(32))
    assert len(singles) == VALVE_STREAK + k  # the streak, then the single-event controls
    # the control round: k events alone, spread over what is undecided, and the rest whole
    controls = sent[-(k + 1) :]
    assert [len(p.items) for p in controls] == [1] * k + [n - VALVE_STREAK - k]
    assert sorted(i for p in controls for i in p.items) == list(range(VALVE_STREAK, n))
    trip_failure = f"why{singles[VALVE_STREAK - 1].items[0]}"
    # the events found bad before the trip are taken back under the trip's failure, like everything else
    assert set(r.request_level.values()) == {trip_failure}


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**16))
def test_after_a_trip_no_probe_is_sent_even_for_probes_answered_later(seed: int) -> None:
    # Given four events bad with distinct errors (the search goes PLAIN: several probes in flight), then the
    # rest bad with one identical error: the valve trips while other probes are still in flight
    import random

    rng = random.Random(seed)
    n = 48
    signature = {i: (f"d{i}" if i < 4 else "same") for i in range(n)}
    search: Search[str] = Search(range(n), "chunk", "d0")
    pending: list[Probe] = []
    after_trip: list[Probe] = []
    while True:
        new = search.probes()
        if search.tripped:
            after_trip.extend(new)
        pending.extend(new)
        if not pending:
            break
        probe = pending.pop(rng.randrange(len(pending)))
        first = probe.items[0]
        search.rejected(probe, f"why{first}", signature[first])
    assert search.done
    assert after_trip == []
    if search.tripped:
        r = search.result
        assert set(r.request_level) | set(r.bad) | set(r.undecided) == set(range(n))
        assert all(v is not None for v in r.request_level.values())


# ------------------------------------------------------------------------------------------- FIFO
def test_fifo_blocks_the_rest_of_a_group_after_a_bad_event_by_default() -> None:
    groups = {0: "a", 1: "a", 2: "b", 3: "a"}
    search: Search[str] = Search(range(4), "why0", "s", groups=groups)  # block_on_bad not given
    answer_all(search, {0})
    r = search.result
    assert r.bad == {0: "why0"}
    assert r.blocked == {1, 3}
    assert r.good == {2}


def test_fifo_goes_one_event_at_a_time_once_the_search_is_dense() -> None:
    n = 40
    search: Search[str] = Search(range(n), "why0", "why0", groups=dict.fromkeys(range(n), "g"), block_on_bad=False)
    sent = answer_all(search, set(range(n)))
    r = search.result
    assert set(r.bad) == set(range(n))
    # once SEARCH_POOLED_FROM events are found (all bad: dense), every later probe holds one event, in order
    found = 0
    for probe in sent:
        if found >= SEARCH_POOLED_FROM:
            assert len(probe.items) == 1, probe
        if len(probe.items) == 1:
            found += 1
    singles = [p.items[0] for p in sent if len(p.items) == 1]
    assert singles == sorted(singles)
    assert len(sent) < 2 * n

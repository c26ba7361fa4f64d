"""The search for the bad events of a request Meta rejected: a pure state machine, no I/O, no clock.

Meta rejects a whole request when any event in it is invalid (2804xxx) and does not say which one. The
scheduler (deliver/engine.py) hands a rejected chunk to a :class:`Search`, sends the probes it asks for (lists of
item indices), and reports each probe's outcome back: accepted, rejected (with the failure and its
signature) or undecided (it could not be decided: transient, throttle, deadline ...). When the search is
``done`` its result says which items were found bad, which were proven good (accepted), which it gave up
on and -- in FIFO mode -- which were blocked behind a bad or undecided event of their group.

Vocabulary: a set that was rejected is *known bad* (it holds at least one bad event); a known-bad set of
one event is *found bad*. To split a known-bad set, only its first half is sent: if accepted, the second
half is known bad without sending it; if rejected, the second half is *undecided* and waits in the pool.

Modes (:func:`mode_for`), chosen from what the search has found so far:

* BINARY -- Hwang's binary splitting: the pool is sent only when no known-bad set is left to split; at
  most :func:`search_request_bound` requests (the first, rejected one included) for k < SEARCH_POOLED_FROM
  bad events, at the cost of one round trip per request;
* POOLED -- the pool is sent every round (fewer round trips once several bad events are known);
* PLAIN -- both halves of every split are sent (a chunk full of bad events: inference gains nothing);
* FIFO prefix (``groups`` given) -- every probe is a *prefix* of the undecided items (earliest first),
  so no later event of a message group is sent before every earlier one is decided. A rejected prefix is
  halved (its first half is the next probe); when it is found to be the earliest bad event, the rest of
  its group is *blocked* (unless ``block_on_bad`` is false: quarantine), and the remainder is sent whole.
  Once the search is dense with bad events (the PLAIN thresholds) it probes one event at a time.

Safety valve: a 2804xxx error Meta returns for *every* request of a pixel (whatever its events) must not cost
a single-event request per event. Meta's answers alone cannot tell that from a chunk whose events are all
genuinely bad with one error; what tells them apart is an accepted request. So:

1. *armed*: VALVE_STREAK single-event probes in a row are rejected with the identical signature (error kind,
   code, subcode) while no probe of this search has been accepted. Those singles say nothing about their
   neighbours: the search's splits lead it to bad events first (a redriven DLQ of rejected letters starts
   with them), so nothing is decided yet;
2. *controls*: when the round ends, the events still undecided (every one not found bad, not accepted) are
   sent as controls: :func:`valve_controls` of them alone (``ceil(log2(chunk))``, at least VALVE_CONTROLS),
   spread over the chunk, and the rest as one probe, all in one round (in
   FIFO prefix mode one at a time: the earliest sendable event of a group not yet tried, then the rest).
   Events the search has not implicated are the likeliest to be good; an event-level chunk with good
   events is refuted at once unless every control holds a bad event;
3. *off* when anything is accepted or a probe is rejected with another signature (the errors depend on the
   events): found-bad events stay bad and the search goes on in its mode, never armed again;
4. *tripped* when every control came back with the same signature too (or nothing was left to try): the
   error is taken to be about the request: nothing is blamed (events found bad with that signature are taken
   back) and every item not proven good is reported in ``request_level``.

Cost of a trip: at most :func:`valve_request_bound` requests: the streak's, then one control round that costs
what isolating one more single event would (``ceil(log2(chunk)) + 1`` requests), in one round trip. What it
cannot see: a chunk in which every control holds an event genuinely rejected with the same error is taken for
request-level (its records fail and come back; with a share ``d`` of bad events in random places, roughly
``d ** valve_controls(chunk)``: measured 0.4 % at d = 0.5 and 5 % at d = 0.7 for ten events, less for larger
chunks; the old valve without controls: 12 % and 30 %).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

SEARCH_POOLED_FROM = 4
SEARCH_PLAIN_FROM = 16
SEARCH_PLAIN_DENSITY = 0.25  # ... or as soon as a quarter of the decided events were bad
VALVE_STREAK = 3
VALVE_CONTROLS = 3  # at least this many events are sent alone as controls before the valve trips


class Mode(Enum):
    BINARY = "binary"
    POOLED = "pooled"
    PLAIN = "plain"


def mode_for(found: int, good: int) -> Mode:
    if found >= SEARCH_PLAIN_FROM or (found >= SEARCH_POOLED_FROM and found >= SEARCH_PLAIN_DENSITY * (found + good)):
        return Mode.PLAIN
    if found >= SEARCH_POOLED_FROM:
        return Mode.POOLED
    return Mode.BINARY


def search_request_bound(bad: int, events: int) -> int:
    """Upper bound on the requests spent on one rejected chunk of ``events`` events holding ``bad`` bad ones
    (the first request included), as long as no request fails for another reason and ``bad`` stays below
    SEARCH_POOLED_FROM. Holds for the FIFO prefix mode too. Larger ``bad`` stays close to it (unit tests)."""
    if events <= 1 or bad <= 0:
        return 1
    return bad * (math.ceil(math.log2(events)) + 1) + 1


def valve_request_bound(events: int) -> int:
    """Upper bound on the requests spent on a chunk of ``events`` events that Meta rejects whatever it holds
    (request-level): the search to the valve's streak, then one control round."""
    return search_request_bound(VALVE_STREAK, events) + valve_controls(events) + 1


def valve_controls(events: int) -> int:
    """Events sent alone in the valve's control round for a chunk of ``events`` (plus one probe of the rest):
    as many requests as the search spends to isolate one more event, at least VALVE_CONTROLS."""
    return max(VALVE_CONTROLS, math.ceil(math.log2(max(events, 1))))


@dataclass(frozen=True, slots=True)
class Probe:
    """One request the search wants sent: item indices in input order."""

    id: int
    items: tuple[int, ...]


@dataclass(slots=True)
class _Sent[F]:
    items: list[int]
    sibling: list[int] | None = None  # known bad if this probe is accepted, undecided if not
    sibling_failure: F | None = None


class _Valve(Enum):
    ARMED = "armed"  # watching for the streak
    DUE = "due"  # streak seen: controls go out when the round ends
    CONTROLS = "controls"  # control round under way
    OFF = "off"  # refuted: something was accepted, or the errors differ
    TRIPPED = "tripped"


@dataclass(slots=True)
class SearchResult[F]:
    bad: dict[int, F] = field(default_factory=dict)  # found bad: item -> the failure that isolated it
    good: set[int] = field(default_factory=set)  # accepted in a probe
    undecided: dict[int, F | None] = field(default_factory=dict)  # could not be decided (why, if known)
    blocked: set[int] = field(default_factory=set)  # FIFO: behind a bad/undecided event of their group
    request_level: dict[int, F] = field(default_factory=dict)  # safety valve: not about the events


class Search[F]:
    """Search one rejected chunk of ``items`` (indices, input order) for its bad events."""

    def __init__(
        self,
        items: Sequence[int],
        failure: F,
        signature: Hashable,
        *,
        groups: Mapping[int, Hashable] | None = None,
        block_on_bad: bool = True,
    ) -> None:
        self.result: SearchResult[F] = SearchResult()
        self._size = len(items)
        self._groups = groups
        self._block_on_bad = block_on_bad
        self._known: list[tuple[list[int], F]] = []
        self._pool: list[int] = []
        self._inflight: dict[int, _Sent[F]] = {}
        self._ready: list[Probe] = []
        self._next_id = 0
        self._streak: tuple[Hashable, int] = (None, 0)
        self._signatures: dict[int, Hashable] = {}
        self._valve = _Valve.ARMED
        self._valve_on: tuple[F, Hashable] | None = None  # the streak's last failure and its signature
        self._controls_left = 0  # FIFO: single-event controls still to send
        self._control_groups: set[Hashable] = set()  # FIFO: groups a control was taken from
        self._tripped: F | None = None
        self._stopped = False
        self._rejected(list(items), failure, signature)
        self._advance()

    # ----------------------------------------------------------------------------------- interface
    @property
    def fifo(self) -> bool:
        return self._groups is not None

    @property
    def done(self) -> bool:
        return not self._inflight and not self._ready

    @property
    def tripped(self) -> bool:
        return self._tripped is not None

    def probes(self) -> list[Probe]:
        """The probes to send now (each returned once; send them all, in any order)."""
        ready, self._ready = self._ready, []
        return ready

    def accepted(self, probe: Probe) -> None:
        sent = self._inflight.pop(probe.id)
        self.result.good.update(sent.items)
        self._streak = (None, 0)
        self._valve_off()
        if sent.sibling:
            assert sent.sibling_failure is not None
            if self._stopped:
                self._leave(sent.sibling, sent.sibling_failure)
            else:
                self._known.append((sent.sibling, sent.sibling_failure))
        self._round_done()

    def rejected(self, probe: Probe, failure: F, signature: Hashable) -> None:
        sent = self._inflight.pop(probe.id)
        if self._valve_on is not None and signature != self._valve_on[1]:
            self._valve_off()  # the errors depend on the events: not request-level
        if self._stopped:
            self._leave(sent.items, failure)
            self._leave(sent.sibling or [], None)
        else:
            self._pool.extend(sent.sibling or [])
            self._rejected(sent.items, failure, signature)
        self._round_done()

    def undecided(self, probe: Probe, failure: F | None) -> None:
        """The probe could not be decided (``failure``: why, for its records); its items are given up."""
        sent = self._inflight.pop(probe.id)
        if self._stopped and sent.sibling:  # probe + sibling: a known-bad set, given up with its failure
            self._leave(sent.items + sent.sibling, sent.sibling_failure)
        else:
            self._pool.extend(sent.sibling or [])  # undecided: nothing can be inferred from this probe
            self._leave(sent.items, failure)
        self._round_done()

    def abandon(self, failure: F | None) -> None:
        """Stop (out of time, or the pixel broke): nothing new is sent; what is not decided is given up
        (with the failure that made it known bad, else ``failure``). Probes in flight must still be reported."""
        left: list[tuple[list[int], F | None]] = [(items, f) for items, f in self._known]
        left.append((self._pool, failure))
        for probe in self._ready:
            sent = self._inflight.pop(probe.id)
            left.append((sent.items + (sent.sibling or []), sent.sibling_failure or failure))
        self._known, self._pool, self._ready = [], [], []
        self._stopped = True
        for items, f in left:
            self._leave(items, f)

    # ----------------------------------------------------------------------------------- outcomes
    def _rejected(self, items: list[int], failure: F, signature: Hashable) -> None:
        if len(items) > 1:
            self._known.append((items, failure))
            return
        (item,) = items
        key, count = self._streak
        count = count + 1 if key == signature else 1
        self._streak = (signature, count)
        self._found(item, failure, signature)
        if count >= VALVE_STREAK and not self.result.good and self._valve is _Valve.ARMED:
            self._valve = _Valve.DUE  # the controls go out when this round ends
            self._valve_on = (failure, signature)

    def _valve_off(self) -> None:
        if self._valve is not _Valve.TRIPPED:
            self._valve = _Valve.OFF

    def _found(self, item: int, failure: F, signature: Hashable) -> None:
        self.result.bad[item] = failure
        self._signatures[item] = signature
        if self._block_on_bad:
            self._block_after(item)

    def _leave(self, items: list[int], failure: F | None) -> None:
        """Give ``items`` up: undecided (the caller fails their records), or request-level once tripped."""
        for item in items:
            if self._tripped is not None:
                self.result.request_level.setdefault(item, self._tripped)
            else:
                self.result.undecided[item] = failure
                self._block_after(item)

    def _block_after(self, item: int) -> None:
        """FIFO: the later undecided events of ``item``'s group are blocked (never sent)."""
        if self._groups is None:
            return
        group = self._groups.get(item)
        if group is None:
            return
        later = {i for i in self._pool if i > item and self._groups.get(i) == group}
        if later:
            self._pool = [i for i in self._pool if i not in later]
            self.result.blocked.update(later)
        # Only the pool can hold later items: a FIFO round's one known-bad set is in flight (a probe and its
        # sibling) whenever an item is found bad or given up.

    def _trip(self, failure: F, signature: Hashable) -> None:
        self._valve = _Valve.TRIPPED
        self._tripped = failure
        self._stopped = True
        for item in [i for i, s in self._signatures.items() if s == signature]:
            del self.result.bad[item]
            self.result.request_level[item] = failure
        self._leave([i for items, _ in self._known for i in items] + self._pool, failure)
        self._known, self._pool = [], []

    # ----------------------------------------------------------------------------------- rounds
    def _round_done(self) -> None:
        if not self._inflight:
            self._advance()

    def _advance(self) -> None:
        """Start the next round: isolate singletons, split known-bad sets, maybe send the pool."""
        if self._stopped:
            return
        while True:
            singles = [(items, f) for items, f in self._known if len(items) == 1]
            if not singles:
                break
            self._known = [(items, f) for items, f in self._known if len(items) != 1]
            for items, failure in singles:  # only the first rejected chunk can be a single event here
                self._found(items[0], failure, None)
        if self._valve is _Valve.DUE:
            self._start_controls()
        if self._valve is _Valve.CONTROLS:
            self._advance_controls()
        elif self.fifo:
            self._advance_fifo()
        else:
            self._advance_unordered()

    # ----------------------------------------------------------------------------------- valve
    def _undecided_items(self) -> list[int]:
        """Take every item not yet decided (the known-bad sets and the pool) out of the search, in order."""
        items = sorted([i for rest, _ in self._known for i in rest] + self._pool)
        self._known, self._pool = [], []
        return items

    def _start_controls(self) -> None:
        """The streak armed the valve and the round is over: send the controls (unordered: all at once)."""
        self._valve = _Valve.CONTROLS
        if self.fifo:
            self._pool = self._undecided_items()
            self._controls_left = valve_controls(self._size)
            return
        rest = self._undecided_items()
        n = len(rest)
        k = valve_controls(self._size)
        # so few left: each alone decides it exactly; else k alone, spread over what is left
        singles = rest if n <= k + 1 else [rest[(2 * j + 1) * n // (2 * k)] for j in range(k)]
        for item in singles:
            self._send([item])
        taken = set(singles)
        if len(taken) < n:
            self._send([i for i in rest if i not in taken])

    def _advance_controls(self) -> None:
        """A control round's step: decide the valve when the controls are in, else (FIFO) send the next one."""
        assert self._valve_on is not None
        if self._valve is _Valve.CONTROLS and self.fifo and self._pool and not self._ready:
            self._send_fifo_control()
            return
        if self._valve is _Valve.CONTROLS:
            if self._inflight or self._ready:
                return
            self._trip(*self._valve_on)
            return
        # The valve is off: what the controls left undecided is searched as usual.
        if self.fifo:
            self._advance_fifo()
        else:
            self._advance_unordered()

    def _send_fifo_control(self) -> None:
        """FIFO: the next control, alone on the wire: an event whose group's earlier events are all decided,
        from a group not tried yet (else any), while valve_controls() last; then the rest, whole."""
        if self._controls_left > 0:
            sendable = self._fifo_heads()
            fresh = [i for i in sendable if self._group(i) not in self._control_groups]
            pick = (fresh or sendable)[0]
            self._controls_left -= 1
            self._control_groups.add(self._group(pick))
            self._pool.remove(pick)
            self._send([pick])
            return
        rest, self._pool = sorted(self._pool), []
        self._send(rest)  # the control round ends when it comes back

    def _group(self, item: int) -> Hashable:
        assert self._groups is not None
        group = self._groups.get(item)
        return group if group is not None else ("item", item)

    def _fifo_heads(self) -> list[int]:
        """The earliest undecided event of each group (the pool holds every undecided item), in order."""
        heads: dict[Hashable, int] = {}
        for item in sorted(self._pool):
            heads.setdefault(self._group(item), item)
        return sorted(heads.values())

    def _advance_unordered(self) -> None:
        mode = mode_for(len(self.result.bad), len(self.result.good))
        known, self._known = self._known, []
        for items, failure in known:
            mid = len(items) // 2
            first, second = items[:mid], items[mid:]
            if mode is Mode.PLAIN:
                self._send(first)
                self._send(second)
            else:
                self._send(first, second, failure)
        if self._pool and (mode is not Mode.BINARY or not self._inflight):
            pool, self._pool = sorted(self._pool), []
            self._send(pool)

    def _advance_fifo(self) -> None:
        # At most one known-bad set (a prefix of what is undecided) and the pool behind it.
        dense = mode_for(len(self.result.bad), len(self.result.good)) is Mode.PLAIN
        if self._known:
            (items, failure), self._known = self._known[0], self._known[1:]
            self._pool.extend(i for rest, _ in self._known for i in rest)
            self._known = []
            if dense:
                self._pool.extend(items[1:])
                self._send(items[:1])
            else:
                mid = len(items) // 2
                self._send(items[:mid], items[mid:], failure)
            return
        if self._pool:
            pool, self._pool = sorted(self._pool), []
            if dense:
                self._pool = pool[1:]
                pool = pool[:1]
            self._send(pool)

    def _send(self, items: list[int], sibling: list[int] | None = None, sibling_failure: F | None = None) -> None:
        probe = Probe(self._next_id, tuple(items))
        self._next_id += 1
        self._inflight[probe.id] = _Sent(items, sibling, sibling_failure)
        self._ready.append(probe)

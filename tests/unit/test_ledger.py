"""The fate ledger (fate.Ledger), the FIFO rule on decided records (fate.block_fifo_groups), the last-chance and
reserve arithmetic at their edges, and the order of letters: what each rule promises, one at a time (issue 17,
mutation testing of the decision code)."""

from __future__ import annotations

from capi_relay.fate.ledger import (
    FIFO_BLOCKED,
    WINDOW_MARGIN_S,
    Decision,
    Ledger,
    LetterDue,
    Outcome,
    block_fifo_groups,
    decide,
    fate_io_reserve_s,
    last_chance,
)

NOW = 1_800_000_000.0


# --------------------------------------------------------------------------------- decide: letters
def test_letters_are_ordered_body_first_then_by_event_position() -> None:
    rejected = [LetterDue(2, "a"), LetterDue(None, "body"), LetterDue(0, "c")]
    got = decide(None, rejected, quarantine=True)
    assert got.quarantine == (LetterDue(None, "body"), LetterDue(0, "c"), LetterDue(2, "a"))
    # without a DLQ the record fails for the first letter's reason (the body's)
    assert decide(None, rejected, quarantine=False) == Decision(Outcome.FAILED, "body")


def test_a_dead_letter_holds_rejected_and_unsettled_events_in_position_order_and_names_the_failure() -> None:
    got = decide("graph_transient_http503", [LetterDue(3, "event_too_old")], quarantine=True, last_chance=True,
                 unsettled=[LetterDue(1, "graph_transient_http503")])  # fmt: skip
    assert got == Decision(Outcome.DEAD_LETTER, "graph_transient_http503",
                           (LetterDue(1, "graph_transient_http503"), LetterDue(3, "event_too_old")))  # fmt: skip
    assert got.letters


def test_a_dead_letter_with_nothing_known_stores_the_body_for_the_failure() -> None:
    got = decide("internal_error", [], quarantine=True, last_chance=True)
    assert got == Decision(Outcome.DEAD_LETTER, "internal_error", (LetterDue(None, "internal_error"),))


def test_the_last_chance_without_a_dlq_fails_the_record() -> None:
    got = decide("graph_throttled_4", [], quarantine=False, last_chance=True)
    assert got == Decision(Outcome.FAILED, "graph_throttled_4", park=True)
    assert not got.letters


# ------------------------------------------------------------------------------------- last chance
def test_retention_is_a_last_chance_only_when_it_ends_strictly_before_the_next_receive_plus_the_margin() -> None:
    def chance(left: float) -> bool:
        return last_chance(receive_count=1, max_receive_count=5, sent=NOW - 1000, retention_s=int(1000 + left),
                           now=NOW, next_receive_s=300)  # fmt: skip

    assert chance(300 + WINDOW_MARGIN_S) is False  # exactly enough: it comes back once more
    assert chance(300 + WINDOW_MARGIN_S - 1) is True
    assert last_chance(receive_count=5, max_receive_count=5, sent=None, retention_s=0, now=NOW, next_receive_s=0)
    assert not last_chance(receive_count=4, max_receive_count=5, sent=None, retention_s=0, now=NOW, next_receive_s=0)
    assert not last_chance(receive_count=None, max_receive_count=1, sent=None, retention_s=0, now=NOW,
                           next_receive_s=0)  # fmt: skip


# ------------------------------------------------------------------------------------------ ledger
def test_the_ledger_registers_each_message_id_once_in_input_order() -> None:
    ledger = Ledger(["b", "a"])
    assert "a" in ledger
    assert "z" not in ledger
    assert ledger.add("c") is True
    assert ledger.add("a") is False
    assert list(ledger) == ["b", "a", "c"]
    assert ledger.unsettled() == ["b", "a", "c"]  # nothing is proven yet


def test_a_record_never_read_and_never_rejected_is_unsettled_and_fails() -> None:
    ledger = Ledger(["m"])
    assert ledger.decide("m", quarantine=True, last_chance=False) == Decision(Outcome.FAILED, "unsettled")
    assert ledger.failure("m") == "unsettled"
    assert ledger.unsettled() == ["m"]


def test_an_undecided_event_fails_the_record_for_its_own_reason_first_reason_wins() -> None:
    ledger = Ledger(["m"])
    ledger.expect("m", 3)
    ledger.accept("m", 0)
    ledger.undecided("m", 2, "graph_throttled_4")
    ledger.undecided("m", 2, "deadline")
    ledger.undecided("unknown", 1, "deadline")  # a messageId never registered is ignored
    decision = ledger.decide("m", quarantine=True, last_chance=True)
    # position 1 has no reason of its own: the record's failure (from position 1's turn: "unsettled") is used
    assert decision == Decision(Outcome.DEAD_LETTER, "unsettled",
                                (LetterDue(1, "unsettled"), LetterDue(2, "graph_throttled_4")))  # fmt: skip
    other = Ledger(["n"])
    other.expect("n", 2)
    other.accept("n", 0)
    other.undecided("n", 1, "graph_throttled_4")
    assert other.decide("n", quarantine=True, last_chance=False) == Decision(
        Outcome.FAILED, "graph_throttled_4", park=True
    )


def test_the_first_failure_wins_and_unknown_ids_are_ignored() -> None:
    ledger = Ledger(["m"])
    ledger.fail("m", "graph_throttled_4", 60.0)
    ledger.fail("m", "deadline", 1.0)
    ledger.fail("unknown", "deadline")
    ledger.accept("unknown", 0)
    ledger.reject("unknown", 0, "x")
    assert (ledger.failure("m"), ledger.retry_after_s("m")) == ("graph_throttled_4", 60.0)


def test_a_failed_record_never_read_dead_letters_its_body_once_with_its_failure() -> None:
    ledger = Ledger(["m"])
    ledger.fail("m", "internal_error")
    assert ledger.decide("m", quarantine=True, last_chance=True).quarantine == (LetterDue(None, "internal_error"),)
    # events rejected before the record failed are stored too, after the body
    partly = Ledger(["p"])
    partly.reject("p", 0, "event_too_old")
    partly.fail("p", "internal_error")
    assert partly.decide("p", quarantine=True, last_chance=True).quarantine == (
        LetterDue(None, "internal_error"),
        LetterDue(0, "event_too_old"),
    )
    # a body already rejected is not stored a second time for the failure
    body = Ledger(["b"])
    body.reject("b", None, "body_not_json")
    body.fail("b", "internal_error")
    assert body.decide("b", quarantine=True, last_chance=True).quarantine == (LetterDue(None, "body_not_json"),)


def test_stored_settles_only_a_record_whose_decision_has_letters() -> None:
    ledger = Ledger(["q", "f", "u"])
    ledger.reject("q", None, "body_not_json")
    assert ledger.decide("q", quarantine=True, last_chance=False).outcome is Outcome.QUARANTINE
    assert ledger.settled("q") is False  # not proven until the letters are stored
    ledger.stored("q")
    ledger.fail("f", "graph_auth_190")
    ledger.decide("f", quarantine=True, last_chance=False)
    ledger.stored("f")  # a failing record has no letters: storing proves nothing
    ledger.stored("u")  # never decided
    assert ledger.unsettled() == ["f", "u"]
    ledger.not_stored("q")
    assert ledger.settled("q") is False
    assert ledger.decision("q") == Decision(Outcome.FAILED, "quarantine_failed")
    assert ledger.unsettled() == ["q", "f", "u"]


def test_unpark_keeps_the_decision_but_parks_nothing() -> None:
    ledger = Ledger(["m", "n"])
    ledger.fail("m", "graph_throttled_4")
    assert ledger.decide("m", quarantine=True, last_chance=False).park
    ledger.unpark("m")
    assert ledger.decision("m") == Decision(Outcome.FAILED, "graph_throttled_4", (), park=False)
    ledger.unpark("n")  # never decided: nothing to unpark
    assert ledger.decision("n") is None


# ---------------------------------------------------------------------------------------- FIFO rule
def _decided(ledger: Ledger, message_id: str, *, failure: str | None = None, rejected: bool = False,
             last: bool = False) -> None:  # fmt: skip
    ledger.expect(message_id, 1)
    if rejected:
        ledger.reject(message_id, 0, "event_too_old")
    elif failure is None:
        ledger.accept(message_id, 0)
    if failure is not None:
        ledger.fail(message_id, failure)
    ledger.decide(message_id, quarantine=True, last_chance=last)


def test_a_failed_record_blocks_every_later_record_of_its_group_and_no_other() -> None:
    ledger = Ledger(["a1", "n1", "b1", "a2", "u", "a3", "b2", "a4"])
    _decided(ledger, "a1", failure="graph_transient_http503")  # group a fails
    _decided(ledger, "n1")  # standard record (no group)
    _decided(ledger, "b1")
    _decided(ledger, "a2")  # delivered, but behind a1
    # "u" is registered but never decided (e.g. the invocation stopped): skipped, stays unsettled
    _decided(ledger, "a3", rejected=True)  # would be quarantined
    _decided(ledger, "b2")
    _decided(ledger, "a4", failure="deadline", last=True)  # would be dead-lettered
    block_fifo_groups(ledger, [("a1", "a"), ("n1", None), ("b1", "b"), ("a2", "a"), ("u", "a"), ("a3", "a"),
                               ("b2", "b"), ("a4", "a")])  # fmt: skip
    for blocked in ("a2", "a3", "a4"):
        assert ledger.decision(blocked) == Decision(Outcome.FAILED, FIFO_BLOCKED)
        assert ledger.settled(blocked) is False
    assert ledger.failure("a2") == FIFO_BLOCKED
    assert ledger.failure("a4") == "deadline"  # a record's own failure is kept
    assert ledger.decision("u") is None
    assert ledger.decision("a1") == Decision(Outcome.FAILED, "graph_transient_http503", park=True)
    assert ledger.unsettled() == ["a1", "a2", "u", "a3", "a4"]


def test_a_group_is_blocked_only_after_its_failed_record() -> None:
    ledger = Ledger(["a1", "a2"])
    _decided(ledger, "a1")
    _decided(ledger, "a2", failure="graph_auth_190")
    block_fifo_groups(ledger, [("a1", "a"), ("a2", "a")])
    assert ledger.decision("a1") == Decision(Outcome.DELIVERED)
    assert ledger.unsettled() == ["a2"]


# ------------------------------------------------------------------------------------- fate reserve
def test_the_reserve_counts_letter_and_park_waves_apart_and_a_concurrency_below_one_as_one() -> None:
    assert fate_io_reserve_s(park_calls=3, letter_calls=3, concurrency=1, call_timeout_s=2.0) == 12.0
    assert fate_io_reserve_s(park_calls=3, letter_calls=3, concurrency=0, call_timeout_s=2.0) == 12.0
    assert fate_io_reserve_s(park_calls=3, letter_calls=1, concurrency=2, call_timeout_s=2.0) == 6.0
    assert fate_io_reserve_s(park_calls=0, letter_calls=0, concurrency=4, call_timeout_s=2.0) == 0.0


# ------------------------------------------------------------------------- the usual record's fast path
def _entries_of_every_kind() -> list[tuple[str, Ledger]]:
    """One ledger per state a record can be in before it is decided."""
    made: list[tuple[str, Ledger]] = []

    def ledger(name: str, events: int | None) -> Ledger:
        book = Ledger([name])
        if events is not None:
            book.expect(name, events)
        made.append((name, book))
        return book

    ledger("never-read", None)
    ledger("all-accepted", 3).accept_all([("all-accepted", 0), ("all-accepted", 1), ("all-accepted", 2)])
    ledger("one-missing", 3).accept_all([("one-missing", 0), ("one-missing", 2)])
    ledger("no-events", 0)
    book = ledger("rejected", 2)
    book.accept("rejected", 0)
    book.reject("rejected", 1, "invalid_value")
    book = ledger("accepted-with-a-letter", 1)  # every event accepted, yet a letter is due: not delivered alone
    book.accept("accepted-with-a-letter", 0)
    book.reject("accepted-with-a-letter", None, "no_pixel_id")
    book = ledger("failed", 1)
    book.accept("failed", 0)
    book.fail("failed", "graph_transient")
    book = ledger("body-rejected", None)
    book.reject("body-rejected", None, "body_not_json")
    book = ledger("undecided", 2)
    book.accept("undecided", 0)
    book.undecided("undecided", 1, "graph_throttled")
    return made


def test_delivered_takes_the_decision_decide_takes_for_a_fully_accepted_record_and_nothing_else() -> None:
    for name, book in _entries_of_every_kind():
        for quarantine in (False, True):
            for final in (False, True):
                reference = _entries_of_every_kind()
                expected = dict(reference)[name].decide(name, quarantine=quarantine, last_chance=final)
                fast = Ledger([name])
                fast._entries[name] = book._entries[name]  # the same entry, decided by the fast path first
                if fast.delivered(name):
                    assert expected == Decision(Outcome.DELIVERED), name
                    assert fast.decision(name) == expected
                    assert fast.settled(name)
                    assert fast.unsettled() == []
                else:
                    assert expected.outcome is not Outcome.DELIVERED, name
                    assert fast.decision(name) is None  # nothing written: decide() takes it
                    assert not fast.settled(name)
    assert [name for name, book in _entries_of_every_kind() if book.delivered(name)] == ["all-accepted", "no-events"]


def test_rejected_count_is_the_number_of_letters_rejected_lists() -> None:
    for name, book in _entries_of_every_kind():
        assert book.rejected_count(name) == len(book.rejected(name)), name


# ------------------------------------------------------------------------ the batch-wide views (issue 21)
def _one_ledger_of_every_kind() -> tuple[list[str], Ledger]:
    """Every kind of entry of :func:`_entries_of_every_kind` in one ledger, in that order."""
    made = _entries_of_every_kind()
    book = Ledger([name for name, _ in made])
    for name, single in made:
        book._entries[name] = single._entries[name]
    return [name for name, _ in made], book


def test_decide_delivered_takes_what_delivered_takes_for_each_record_and_returns_the_positions_of_the_rest() -> None:
    names, one_pass = _one_ledger_of_every_kind()
    one_by_one = dict(_entries_of_every_kind())
    rest = one_pass.decide_delivered()
    expected_rest = [(i, name) for i, name in enumerate(names) if not one_by_one[name].delivered(name)]
    assert rest == expected_rest
    assert [name for _, name in rest] == ["never-read", "one-missing", "rejected", "accepted-with-a-letter", "failed",
                                        "body-rejected", "undecided"]  # fmt: skip
    for name in names:
        assert one_pass.decision(name) == one_by_one[name].decision(name), name
        assert one_pass.settled(name) == one_by_one[name].settled(name), name
    # a record already decided is left as it is: decided again by no one
    one_pass.fail("one-missing", "deadline")
    one_pass.decide("one-missing", quarantine=True, last_chance=False)
    assert [name for _, name in one_pass.decide_delivered()] == ["never-read", "rejected", "accepted-with-a-letter",
                                                               "failed", "body-rejected", "undecided"]  # fmt: skip


def test_failing_is_a_live_view_of_every_record_whose_failure_is_set_however_it_was_set() -> None:
    ledger = Ledger(["f", "u", "n", "b", "ok"])
    failing = ledger.failing()
    ledger.fail("f", "deadline_preparing")
    ledger.fail("f", "later")  # the first reason wins; still one record
    ledger.fail("ghost", "x")  # never registered: nothing written
    ledger.expect("u", 1)
    ledger.decide("u", quarantine=True, last_chance=False)  # an event nobody reported on: unsettled
    ledger.decide("n", quarantine=True, last_chance=False)  # never read: unsettled
    ledger.expect("b", 1)
    ledger.accept("b", 0)
    ledger.decide("b", quarantine=True, last_chance=False)
    ledger.block("b")  # FIFO: behind a failed record of its group
    ledger.expect("ok", 1)
    ledger.accept("ok", 0)
    ledger.decide("ok", quarantine=True, last_chance=False)
    assert set(failing) == {"f", "u", "n", "b"}
    assert {m for m in ledger if ledger.failure(m) is not None} == set(failing)


def test_rejections_counts_each_first_rejection_of_every_record() -> None:
    ledger = Ledger(["a", "b"])
    ledger.reject("a", 0, "event_too_old")
    ledger.reject("a", 0, "other")  # the first reason wins: still one letter
    ledger.reject("a", None, "no_pixel_id")
    ledger.reject("b", 3, "invalid_value")
    ledger.reject("ghost", 0, "x")  # never registered
    ledger.undecided("b", 1, "graph_throttled")  # not a rejection
    assert ledger.rejections() == 3 == sum(ledger.rejected_count(m) for m in ledger)


def test_outcomes_leave_out_only_the_plainly_delivered_records_unless_asked() -> None:
    names, ledger = _one_ledger_of_every_kind()
    ledger.decide_delivered()
    for name in names:
        if ledger.decision(name) is None:
            ledger.decide(name, quarantine=True, last_chance=False)
    ledger.stored("rejected")  # its letter stored: settled, but not plainly delivered
    every = ledger.outcomes(delivered=True)
    assert every == [(name, ledger.decision(name), ledger.settled(name)) for name in names]
    assert [m for m, _, _ in ledger.outcomes(delivered=False)] == [
        m for m, decision, settled in every if not (settled and decision == Decision(Outcome.DELIVERED))
    ]
    assert "rejected" in [m for m, _, _ in ledger.outcomes(delivered=False)]
    assert len(ledger) == len(names)


def test_a_registered_record_starts_unsettled_with_no_failure_and_no_retry_hint() -> None:
    # Given a record just registered; Then nothing is proven or known of it yet (exact values: callers compare
    # them with `is`, and `retry_after_s` feeds the park time once a failure is noted)
    ledger = Ledger(["m"])
    assert ledger.settled("m") is False
    assert ledger.failure("m") is None
    assert ledger.retry_after_s("m") is None
    ledger.fail("m", "graph_transient_5xx")
    assert ledger.retry_after_s("m") is None  # no hint given with the failure

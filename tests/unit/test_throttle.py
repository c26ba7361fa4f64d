"""The throttle hold book: longer holds win, expiry on the given clock, bounded by evicting what ends first."""

from __future__ import annotations

from capi_relay.deliver.throttle import Hold, HoldBook


def test_a_longer_hold_is_kept_and_a_shorter_one_ignored() -> None:
    book = HoldBook()
    book.hold("1", Hold(200.0, "graph_throttled_4", 4))
    book.hold("1", Hold(150.0, "graph_throttled_17", 17))
    assert book.get("1", now=100.0) == Hold(200.0, "graph_throttled_4", 4)
    book.hold("1", Hold(300.0, "graph_throttled_17", 17))
    assert book.get("1", now=100.0) == Hold(300.0, "graph_throttled_17", 17)


def test_a_hold_ends_at_its_time() -> None:
    book = HoldBook()
    book.hold("1", Hold(200.0, "graph_throttled_4"))
    assert book.get("1", now=199.9) is not None
    assert book.get("1", now=200.0) is None
    assert book.get("1", now=100.0) is None  # forgotten once ended


def test_the_book_is_bounded_by_dropping_the_hold_that_ends_first() -> None:
    book = HoldBook(max_pixels=2)
    book.hold("a", Hold(300.0, "r"))
    book.hold("b", Hold(100.0, "r"))
    book.hold("c", Hold(200.0, "r"))  # full: "b" ends first and goes
    assert book.get("b", now=0.0) is None
    assert book.get("a", now=0.0) is not None
    assert book.get("c", now=0.0) is not None

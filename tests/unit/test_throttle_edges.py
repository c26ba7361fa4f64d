"""Throttle holds at their edges (issue 17, mutation testing): a hold that ends at the same time as the one
already known does not replace it (the first reason and code stay what the records are parked with)."""

from __future__ import annotations

from capi_relay.throttle import Hold, HoldBook


def test_an_equal_hold_keeps_the_first_reason() -> None:
    book = HoldBook()
    book.hold("1", Hold(200.0, "graph_throttled_4", 4))
    book.hold("1", Hold(200.0, "graph_throttled_613", 613))
    assert book.get("1", now=100.0) == Hold(200.0, "graph_throttled_4", 4)


def test_a_hold_of_a_known_pixel_never_evicts_another_pixel() -> None:
    book = HoldBook(max_pixels=2)
    book.hold("a", Hold(100.0, "r"))
    book.hold("b", Hold(300.0, "r"))
    book.hold("a", Hold(400.0, "r"))  # the book is full, but "a" is already in it
    assert book.get("b", now=0.0) == Hold(300.0, "r")
    assert book.get("a", now=0.0) == Hold(400.0, "r")

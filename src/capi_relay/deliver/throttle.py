"""Throttle holds that outlive one invocation: Meta's block is remembered per pixel, on the wall clock.

A throttle answer (code 4/17/32/613/80000-80014, HTTP 429) comes with Meta's estimate of when the block
ends (``Retry-After`` or the usage headers). The :class:`HoldBook` lives in the Deliverer, i.e. for the
life of the execution environment, so the next invocation does not post into a block it already knows.
Expiry is on the wall clock (a frozen Lambda environment does not see monotonic time pass reliably).
Bounded: at most ``MAX_PIXELS`` entries of a few dozen bytes each; expired entries are dropped first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

MAX_PIXELS = 1024


@dataclass(frozen=True, slots=True)
class Hold:
    until: float  # wall-clock seconds (time.time())
    reason: str  # the throttle's reason code, e.g. graph_throttled_4
    code: int | None = None
    subcode: int | None = None


class HoldBook:
    def __init__(self, max_pixels: int = MAX_PIXELS) -> None:
        self._holds: dict[str, Hold] = {}
        self._max = max_pixels
        self._lock = threading.Lock()

    def hold(self, pixel_id: str, hold: Hold) -> None:
        """Remember a block; an existing longer one is kept."""
        with self._lock:
            current = self._holds.get(pixel_id)
            if current is not None and current.until >= hold.until:
                return
            if pixel_id not in self._holds and len(self._holds) >= self._max:
                self._evict()
            self._holds[pixel_id] = hold

    def get(self, pixel_id: str, now: float) -> Hold | None:
        """The pixel's block if it has not ended by ``now`` (wall clock)."""
        with self._lock:
            hold = self._holds.get(pixel_id)
            if hold is not None and hold.until <= now:
                del self._holds[pixel_id]
                return None
            return hold

    def _evict(self) -> None:
        # Drop the hold that ends first (expired ones end first): the book stays within its bound.
        first = min(self._holds, key=lambda p: self._holds[p].until)
        del self._holds[first]

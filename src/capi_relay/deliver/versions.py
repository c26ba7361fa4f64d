"""Graph API versions and when Meta retires them, for the ``GraphApiVersionDaysLeft`` metric, its alarm and
``capi-relay check``'s warning. Pure: the caller passes today's date.

Source: Meta's Graph API changelog, "Available Graph API versions" / "Versions"
(https://developers.facebook.com/docs/graph-api/changelog/versions, read 2026-12-06; meta-capi.md G-CL), and the
v27.0 release of 2026-11-04 (issue 18). Meta's policy (Platform Versioning): a version is usable for about two years
after the next one is released. Expiry dates Meta has not announced yet ("TBD") are left as None.

Update this table when Meta publishes a version or an expiry date; tests/unit/test_graph_versions.py checks its
shape (dates in order, every expiry after its release).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache

CHECKED = date(2026, 12, 6)  # the day this table was last compared with Meta's changelog
WARN_DAYS = 90  # the alarm and `check` warn this many days before a version expires


@dataclass(frozen=True, slots=True)
class GraphVersion:
    name: str
    released: date
    expires: date | None  # None: Meta has not announced it ("TBD")


VERSIONS: tuple[GraphVersion, ...] = (
    GraphVersion("v19.0", date(2024, 1, 23), date(2026, 5, 21)),
    GraphVersion("v20.0", date(2024, 5, 21), date(2026, 9, 24)),
    GraphVersion("v21.0", date(2024, 10, 2), date(2027, 1, 21)),
    GraphVersion("v22.0", date(2025, 1, 21), date(2027, 5, 20)),
    GraphVersion("v23.0", date(2025, 5, 29), date(2027, 10, 8)),
    GraphVersion("v24.0", date(2025, 10, 8), date(2028, 2, 18)),
    GraphVersion("v25.0", date(2026, 2, 18), date(2028, 7, 29)),
    GraphVersion("v26.0", date(2026, 7, 29), None),
    GraphVersion("v27.0", date(2026, 11, 4), None),
)
_BY_NAME = {v.name: v for v in VERSIONS}


def _two_years_after(day: date) -> date:
    return day.replace(year=day.year + 2, day=28) if (day.month, day.day) == (2, 29) else day.replace(year=day.year + 2)


def _number(name: str) -> float | None:
    try:
        return float(name.removeprefix("v"))
    except ValueError:
        return None


def expiry(name: str) -> date | None:
    """The day ``name`` stops working: Meta's date when announced; else the earliest it can be by Meta's policy
    (two years after the next version's release, or after ``CHECKED`` when no later version is known: one released
    later can only push it further); None for a version this table does not know and that is not newer than all
    it knows (an old or made-up version: treat it as expired)."""
    version = _BY_NAME.get(name)
    if version is not None and version.expires is not None:
        return version.expires
    if version is not None:
        later = [v.released for v in VERSIONS if v.released > version.released]
        return _two_years_after(min(later) if later else CHECKED)
    number, newest = _number(name), _number(VERSIONS[-1].name)
    if number is not None and newest is not None and number > newest:
        return _two_years_after(CHECKED)
    return None


@lru_cache(maxsize=16)
def days_left(name: str, today: date) -> int:
    """Days until ``name`` expires (0: expired or unknown). Cached: the handler asks once per invocation."""
    end = expiry(name)
    return max(0, (end - today).days) if end is not None else 0


def newest() -> str:
    return VERSIONS[-1].name


EXPIRING = "graph_api_version_expiring"


def version_warning(name: str, today: date) -> dict[str, object] | None:
    """``capi-relay check``'s warning when ``name`` expires within WARN_DAYS days (or is unknown / expired)."""
    left = days_left(name, today)
    if left >= WARN_DAYS:
        return None
    return {"index": None, "warning": EXPIRING, "graph_api_version": name, "days_left": left, "newest": newest()}

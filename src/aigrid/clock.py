"""The clock every layer reads: wall-clock microseconds, and the budget periods they fall in."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


def period_start_us(period: str, now_us: int) -> int:
    """The start (UTC, microseconds) of the budget period that contains ``now_us``."""
    if period == "total":
        return 0
    now = datetime.fromtimestamp(now_us / 1e6, tz=UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"unknown period {period!r}")
    return int(start.timestamp() * 1_000_000)


def period_end_us(period: str, start_us: int) -> int:
    """The end (exclusive) of the budget period that starts at ``start_us``."""
    if period == "total":
        return 2**63 - 1
    start = datetime.fromtimestamp(start_us / 1e6, tz=UTC)
    if period == "day":
        end = start + timedelta(days=1)
    elif period == "month":
        end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return int(end.timestamp() * 1_000_000)


def now_us() -> int:
    """Wall-clock time in integer microseconds."""
    return time.time_ns() // 1000

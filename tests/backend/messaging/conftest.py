"""The messaging tests' clock: a Monday morning in San Francisco (10:30), where their
numbers are, so marketing messages are inside contact hours unless a test moves the
clock into the night (tests/backend/messaging/test_guards.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend.core.clock import FixedClock


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 2, 18, 30, tzinfo=UTC))

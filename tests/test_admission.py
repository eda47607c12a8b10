"""The pixel budget: decoded pixels in flight are bounded; a study waits for room until its deadline."""

from __future__ import annotations

import threading
import time

import pytest

from classifiers import Overloaded
from classifiers.admission import PixelBudget


def test_study_waits_for_room_and_runs_when_it_is_freed() -> None:
    budget = PixelBudget(100)
    release = threading.Event()
    holding = threading.Event()

    def hold_seventy() -> None:
        with budget.hold(70, deadline=None):
            holding.set()
            release.wait()

    holder = threading.Thread(target=hold_seventy)
    holder.start()
    holding.wait()
    threading.Timer(0.2, release.set).start()
    started = time.monotonic()
    with budget.hold(50, deadline=time.monotonic() + 5):
        waited = time.monotonic() - started
        assert budget.in_use == 50
    holder.join()
    assert 0.15 < waited < 2 and budget.in_use == 0


def test_no_room_by_the_deadline_is_overloaded_and_holds_nothing() -> None:
    budget = PixelBudget(100)
    with budget.hold(80, deadline=None):
        started = time.monotonic()
        with pytest.raises(Overloaded, match="decoded pixels are in flight"), budget.hold(30, time.monotonic() + 0.1):
            pass
        assert 0.09 < time.monotonic() - started < 1
        assert budget.in_use == 80
    assert budget.in_use == 0


def test_study_larger_than_the_budget_runs_alone() -> None:
    budget = PixelBudget(100)
    with budget.hold(1_000, deadline=time.monotonic() + 1):
        assert budget.in_use == 100
        with pytest.raises(Overloaded), budget.hold(1, time.monotonic() + 0.05):
            pass
    assert budget.in_use == 0

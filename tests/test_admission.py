"""The pixel budget: decoded pixels in flight are bounded; a study waits for room until its deadline.

Deadlines read a FakeClock the test moves, and room is freed when the test says, so no verdict depends on
how fast this machine is.
"""

from __future__ import annotations

import threading

import pytest

from classifiers import Overloaded
from classifiers.admission import PixelBudget
from tests.support.timing import WAIT_LIMIT_S, FakeClock, wait_until


def _hold_in_thread(budget: PixelBudget, num_pixels: int, deadline: float | None, release: threading.Event,
                    outcome: list[str]) -> threading.Thread:
    """Hold `num_pixels` from a thread until `release`; `outcome` gets 'held' (with release's state) or the error."""

    def hold() -> None:
        try:
            with budget.hold(num_pixels, deadline):
                outcome.append(f"held, in use {budget.in_use}, release {'set' if release.is_set() else 'unset'}")
                release.wait(WAIT_LIMIT_S)
        except Overloaded as error:
            outcome.append(f"overloaded: {error}")

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


def _join(thread: threading.Thread) -> None:
    thread.join(WAIT_LIMIT_S)
    assert not thread.is_alive()


def test_study_waits_for_room_and_runs_when_it_is_freed() -> None:
    clock = FakeClock()
    budget = PixelBudget(100, clock=clock)
    release, done = threading.Event(), threading.Event()
    holder_outcome: list[str] = []
    holder = _hold_in_thread(budget, 70, None, release, holder_outcome)
    wait_until(lambda: holder_outcome, "the first study held its pixels")
    waiter_outcome: list[str] = []
    waiter = _hold_in_thread(budget, 50, clock() + 5, done, waiter_outcome)
    clock.advance(4)  # not yet its deadline: whenever it looks, it keeps waiting
    with budget.hold(0, None):  # any change to the budget wakes the waiter to look again
        pass
    assert budget.in_use == 70
    release.set()
    _join(holder)
    wait_until(lambda: waiter_outcome, "the waiting study got its room")
    done.set()
    _join(waiter)
    assert waiter_outcome == ["held, in use 50, release unset"]  # it ran only once the first study left
    assert budget.in_use == 0


def test_no_room_by_the_deadline_is_overloaded_and_holds_nothing() -> None:
    clock = FakeClock()
    budget = PixelBudget(100, clock=clock)
    with budget.hold(80, deadline=None):
        outcome: list[str] = []
        waiter = _hold_in_thread(budget, 30, clock() + 1, threading.Event(), outcome)
        clock.advance(2)  # past its deadline
        with budget.hold(0, None):  # wakes the waiter if it is waiting already
            pass
        _join(waiter)
        assert len(outcome) == 1 and outcome[0].startswith("overloaded: 80 decoded pixels are in flight"), outcome
        assert budget.in_use == 80
    assert budget.in_use == 0


def test_a_deadline_already_past_is_refused_without_waiting() -> None:
    clock = FakeClock()
    budget = PixelBudget(100, clock=clock)
    with budget.hold(80, deadline=None):
        with pytest.raises(Overloaded, match="budget 100"), budget.hold(30, clock()):
            pass
        with budget.hold(20, clock()):  # room enough: a past deadline does not matter
            assert budget.in_use == 100
    assert budget.in_use == 0


def test_study_larger_than_the_budget_runs_alone() -> None:
    clock = FakeClock()
    budget = PixelBudget(100, clock=clock)
    with budget.hold(1_000, deadline=clock() + 1):
        assert budget.in_use == 100
        with pytest.raises(Overloaded), budget.hold(1, clock()):
            pass
    assert budget.in_use == 0


def test_the_budget_needs_room_for_one_pixel() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        PixelBudget(0)

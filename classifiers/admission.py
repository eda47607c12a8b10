"""Admission: the limits every study meets before anything is decoded, the same at every door.

In order: the views' headers are parsed once (`decoding.probe_view`; a bad view refuses the study or is
left out, as the request says), frames count as views against the views-per-study limit, the views'
pixels (from their headers) against the per-study limit, the queue deadline, then the process's pixel
budget, held while the study is decoded and scored (an explained view costs its heatmap's memory too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from classifiers.decoding import probe_view
from classifiers.decoding.imaging import ImageLimits
from classifiers.errors import ImageError, InvalidOption, NoReadableView, Overloaded, StudyTooLarge, TooManyViews
from classifiers.results import ProbedView, UnreadableView
from classifiers.study_request import StudyRequest

Clock = Callable[[], float]


@dataclass(frozen=True)
class AdmissionLimits:
    """What one study may hold: views (frames count), pixels per view (in `image_limits`), pixels per study."""

    max_views: int = 12
    max_study_pixels: int = 120_000_000
    image_limits: ImageLimits = ImageLimits()
    # What one explained view holds beyond its pixels (maps, upsampled heat, overlay PNG), in budget pixels:
    # about 3 MB per view measured on the demo repository, at the budget's 11 bytes per pixel.
    explain_pixels_per_view: int = 300_000


@dataclass(frozen=True)
class AdmittedStudy:
    """A study that passed admission: its probed views, the views left out, its pixels."""

    views: tuple[ProbedView, ...]
    unreadable: tuple[UnreadableView, ...]
    num_pixels: int


class PixelBudget:
    """At most `capacity` decoded pixels held at once; a study waits for room until its deadline, then 503.

    Decoding a 16-bit view holds about 11 bytes per pixel at its peak (the uint16 image and the float64
    copy that scales it), so the budget, not luck, bounds what concurrent studies can take.
    """

    def __init__(self, capacity: int, clock: Clock = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError(f"pixel budget {capacity!r} must be >= 1")
        self.capacity = capacity
        self.clock = clock
        self._in_use = 0
        self._condition = threading.Condition()

    @property
    def in_use(self) -> int:
        """Pixels held now."""
        return self._in_use

    @contextmanager
    def hold(self, num_pixels: int, deadline: float | None) -> Iterator[None]:
        """Hold `num_pixels` for the `with` block; wait for room until `deadline` (a time of `clock`).

        Raises:
            Overloaded: no room by the deadline (a study larger than the whole budget waits for an
            empty budget instead, so it still runs, alone).
        """
        wanted = min(num_pixels, self.capacity)
        with self._condition:
            while self._in_use + wanted > self.capacity:
                remaining = None if deadline is None else deadline - self.clock()
                if remaining is not None and remaining <= 0:
                    raise Overloaded(f"{self._in_use:,} decoded pixels are in flight in this worker (budget "
                                     f"{self.capacity:,}); retry shortly")
                self._condition.wait(timeout=remaining)
            self._in_use += wanted
        try:
            yield
        finally:
            with self._condition:
                self._in_use -= wanted
                self._condition.notify_all()


class Admission:
    """Admits the studies of one process against its limits and its pixel budget."""

    def __init__(self, limits: AdmissionLimits, budget: PixelBudget,
                 refuse_if_late: Callable[[float | None, str | None], None]) -> None:
        self.limits = limits
        self.budget = budget
        self.refuse_if_late = refuse_if_late  # raises Overloaded when the queues cannot take the study in time

    @contextmanager
    def admit(self, request: StudyRequest) -> Iterator[AdmittedStudy]:
        """Check `request` against every limit and hold its pixels in the budget for the `with` block.

        Raises:
            InvalidOption: no view at all.
            ImageError: a view is unreadable or over the per-view limits (unless the request skips those).
            NoReadableView: every view was left out.
            TooManyViews, StudyTooLarge: over the views (frames count) or pixels per study.
            Overloaded: the queues or the pixel budget have no room before the deadline.
        """
        if not request.views:
            raise InvalidOption("a study needs at least one image")
        views, unreadable = self._probe(request)
        num_frames = sum(view.num_frames for view in views)
        if num_frames > self.limits.max_views:
            raise TooManyViews(f"the study has {num_frames} views (a multi-frame image counts each frame), the"
                               f" limit is {self.limits.max_views}; send at most {self.limits.max_views} views")
        num_pixels = sum(view.num_pixels for view in views)
        if num_pixels > self.limits.max_study_pixels:
            raise StudyTooLarge(f"the {num_frames} views have {num_pixels:,} pixels together, over the limit of "
                                f"{self.limits.max_study_pixels:,} per study; send fewer or smaller views")
        self.refuse_if_late(request.deadline, request.body_part)
        held = num_pixels + (num_frames * self.limits.explain_pixels_per_view if request.explain else 0)
        with self.budget.hold(held, request.deadline):
            yield AdmittedStudy(tuple(views), tuple(unreadable), num_pixels)

    def _probe(self, request: StudyRequest) -> tuple[list[ProbedView], list[UnreadableView]]:
        """Parse each view's header once; an unreadable view refuses the study or is left out, as asked."""
        views, unreadable = [], []
        for view in request.views:
            try:
                views.append(probe_view(view, self.limits.image_limits))
            except ImageError as error:
                if not request.skip_unreadable:
                    raise
                unreadable.append(UnreadableView(view.name, type(error).__name__, str(error)))
        if not views:
            raise NoReadableView(f"none of the study's {len(request.views)} views can be read", unreadable)
        return views, unreadable

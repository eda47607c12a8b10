"""The drift monitor: per body part, the last studies' three numbers and their PSI against the reference.

Each body part keeps a ring buffer of the last `window` studies' signals (abnormality, router confidence,
out-of-distribution flag: no names, no identifiers, no pixels). After each study the part's PSI figures are
recomputed (a few histograms of at most `window` numbers); below `min_studies` none is reported, since a PSI
of a handful of studies is mostly noise. A signal that reaches DRIFT_PSI logs one warning, and one more once
it is back under WATCH_PSI (the gap keeps a figure hovering at the threshold from logging on every study).
Safe to call from many threads at once (gunicorn's gthread workers).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from classifiers.body_parts import BODY_PARTS
from classifiers.drift import (
    DRIFT_PSI,
    SIGNALS,
    STATUSES,
    WATCH_PSI,
    WRITE_COMMAND,
    DriftReference,
    StudySignals,
    changed_models,
    status_of,
    study_signals,
    window_psi,
)

if TYPE_CHECKING:
    from classifiers.results import StudyResult

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 200  # studies per body part
DEFAULT_MIN_STUDIES = 100  # in the window before a PSI is reported
NO_REFERENCE_NOTE = (f"the repository has no drift reference (manifest.json 'drift_reference'): window sizes and"
                     f" out-of-distribution rates are kept, but no PSI is computed; write one with {WRITE_COMMAND}")


@dataclass(frozen=True)
class PartDrift:
    """One body part's figures now: studies in its window, their gate rate, and each signal's PSI (when reported)."""

    studies: int
    out_of_distribution_rate: float | None
    psi: dict[str, float] = field(default_factory=dict)
    reference_studies: int | None = None
    reference_out_of_distribution_rate: float | None = None


class DriftMonitor:
    """Sliding windows of recent studies per body part, compared with the repository's drift reference."""

    def __init__(self, window: int = DEFAULT_WINDOW, min_studies: int = DEFAULT_MIN_STUDIES,
                 reference: DriftReference | None = None) -> None:
        if window < 1 or not 1 <= min_studies <= window:
            raise ValueError(f"drift window {window} and minimum {min_studies} studies: need 1 <= minimum <= window")
        self.window = window
        self.min_studies = min_studies
        self.reference = reference
        self.changed_models: list[str] = []  # roles loaded from other files than the reference was computed with
        self._lock = threading.Lock()
        self._windows: dict[str, deque[StudySignals]] = {part: deque(maxlen=window) for part in BODY_PARTS}
        self._psi: dict[str, dict[str, float]] = {part: {} for part in BODY_PARTS}
        self._drifting: dict[str, set[str]] = {part: set() for part in BODY_PARTS}

    def use_reference(self, reference: DriftReference | None, versions: Mapping[str, str] | None = None) -> None:
        """Compare with `reference` from now on (the pipeline's, once loaded); `versions`: the loaded models'.

        A reference computed with other model files is still used, but said to be stale (log, /models).
        """
        changed = [] if reference is None else changed_models(reference, versions or {})
        if changed:
            logger.warning("the drift reference was computed with other models (%s): its figures no longer describe"
                           " these models; rewrite it with %s", ", ".join(changed), WRITE_COMMAND)
        with self._lock:
            self.reference = reference
            self.changed_models = changed
            for part in BODY_PARTS:
                self._psi[part] = self._figures(part)
                self._drifting[part].clear()

    def observe(self, result: StudyResult) -> None:
        """Add one answered study to its body part's window (Pipeline's on_study observer)."""
        signals = study_signals(result)
        part = result.body_part
        with self._lock:
            if part not in self._windows:
                return
            self._windows[part].append(signals)
            self._psi[part] = self._figures(part)
            started, ended = self._transitions(part)
            figures, studies = dict(self._psi[part]), len(self._windows[part])
        for signal in started:
            logger.warning("drift: %s %s PSI %.2f >= %.2f over the last %d studies; see docs/MONITORING.md", part,
                           signal, figures[signal], DRIFT_PSI, studies)
        for signal in ended:
            logger.warning("drift over: %s %s PSI %.2f < %.2f over the last %d studies", part, signal,
                           figures.get(signal, 0.0), WATCH_PSI, studies)

    def _figures(self, part: str) -> dict[str, float]:
        """PSI of each signal of the part's window; empty below min_studies or without the part's reference."""
        reference = None if self.reference is None else self.reference.parts.get(part)
        window = self._windows[part]
        if reference is None or len(window) < self.min_studies:
            return {}
        return window_psi(reference, list(window))

    def _transitions(self, part: str) -> tuple[list[str], list[str]]:
        """Signals that just reached DRIFT_PSI, and those in drift that just fell under WATCH_PSI."""
        figures, drifting = self._psi[part], self._drifting[part]
        started = [signal for signal in SIGNALS if signal not in drifting and figures.get(signal, 0.0) >= DRIFT_PSI]
        ended = [signal for signal in SIGNALS if signal in drifting and figures.get(signal, 0.0) < WATCH_PSI]
        drifting.update(started)
        drifting.difference_update(ended)
        return started, ended

    def snapshot(self) -> dict[str, PartDrift]:
        """Every body part's figures now (for the gauges and /models)."""
        with self._lock:
            return {part: self._part_drift(part) for part in BODY_PARTS}

    def _part_drift(self, part: str) -> PartDrift:
        """One part's figures; called under the lock."""
        window = self._windows[part]
        flags = [study.out_of_distribution for study in window if study.out_of_distribution is not None]
        reference = None if self.reference is None else self.reference.parts.get(part)
        return PartDrift(len(window), float(np.mean(flags)) if flags else None, dict(self._psi[part]),
                         None if reference is None else reference.studies,
                         None if reference is None else reference.out_of_distribution_rate)

    def describe(self) -> dict[str, Any]:
        """The /models "drift" block: settings, the reference's provenance, each part's window and figures."""
        snapshot = self.snapshot()
        reference = self.reference
        block: dict[str, Any] = {
            "reference": None if reference is None else {"computed_on": dict(reference.computed_on),
                                                         "bins": reference.bins},
            "method": "population stability index against the reference's bins",
            "window": self.window, "min_studies": self.min_studies,
            "thresholds": {"watch": WATCH_PSI, "drift": DRIFT_PSI},
            "body_parts": {part: _describe_part(figures, self.min_studies) for part, figures in snapshot.items()},
        }
        if reference is None:
            block["note"] = NO_REFERENCE_NOTE
        elif self.changed_models:
            block["note"] = (f"the reference was computed with other models ({', '.join(self.changed_models)}): its"
                             f" figures no longer describe these models; rewrite it with {WRITE_COMMAND}")
        return block


def _describe_part(figures: PartDrift, min_studies: int) -> dict[str, Any]:
    """One part's entry in the /models drift block."""
    if figures.reference_studies is None:
        state = "no reference"
    elif figures.studies < min_studies:
        state = f"collecting ({figures.studies} of {min_studies} studies)"
    else:
        state = max((status_of(psi) for psi in figures.psi.values()), key=STATUSES.index,
                    default="stable")
    return {"studies": figures.studies, "status": state,
            "psi": {signal: round(psi, 4) for signal, psi in figures.psi.items()},
            "out_of_distribution_rate": _rounded(figures.out_of_distribution_rate),
            "reference_studies": figures.reference_studies,
            "reference_out_of_distribution_rate": _rounded(figures.reference_out_of_distribution_rate)}


def _rounded(rate: float | None) -> float | None:
    """A rate to 4 decimals, None kept."""
    return None if rate is None else round(rate, 4)

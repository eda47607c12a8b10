"""Drift: how far recent studies are from the validation studies, by the population stability index (PSI).

Three signals per study: the study's abnormality score (calibrated, as answered), the router's confidence (the
largest of its probabilities averaged over the views) and whether the out-of-domain gate flagged any view.
The reference, written into manifest.json by `python -m training.drift_reference`, holds per body part the
validation studies' histograms of the first two (bins at the quintiles of those studies' scores) and their
out-of-distribution rate. A window of recent studies is binned with the reference's own edges and compared
bin by bin: PSI = sum((window - reference) * ln(window / reference)), each proportion floored at EPSILON so an
empty bin counts as a large but finite difference. By convention PSI under 0.1 is stable, 0.1 to 0.25 worth
watching, 0.25 and above a shift (docs/MONITORING.md).

Five bins, not the ten of credit scoring: with no drift at all PSI's own sampling noise is about
(bins - 1) * (1/window + 1/reference), for a window of 200 and 200 reference studies 0.04 with five bins (0.1
crossed by chance 4 % of the time) but 0.09 with ten (36 %); a shift of the mean by half a standard deviation
still reads 0.22 with five bins (0.24 with ten). Simulated in docs/MONITORING.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from classifiers.body_parts import BODY_PARTS
from classifiers.errors import ModelRepositoryError
from classifiers.repository.entries import is_probability

if TYPE_CHECKING:
    from classifiers.results import StudyResult

DRIFT_REFERENCE_KEY = "drift_reference"  # manifest.json, top level
REFERENCE_FORMAT = 1
WRITE_COMMAND = "python -m training.drift_reference REPOSITORY --data FOLDER"
HISTOGRAM_SIGNALS = ("abnormality", "router_confidence")
OOD_SIGNAL = "out_of_distribution"
SIGNALS = (*HISTOGRAM_SIGNALS, OOD_SIGNAL)
DEFAULT_BINS = 5  # quintiles of the reference studies
REFERENCE_MIN_STUDIES = 200  # validation studies a body part needs for a reference (noise above)
EPSILON = 1e-4  # floor of a proportion: an empty bin adds about p * ln(p / 1e-4), e.g. 1.5 for p = 0.2
WATCH_PSI = 0.1
DRIFT_PSI = 0.25
STATUSES = ("stable", "watch", "drift")


@dataclass(frozen=True)
class StudySignals:
    """What the monitor keeps of one study: three numbers, nothing that identifies it."""

    abnormality: float
    router_confidence: float
    out_of_distribution: bool | None  # None when the repository has no gate


def study_signals(result: StudyResult) -> StudySignals:
    """The three drift signals of an answered study."""
    parts = list(result.images[0].body_part_scores) if result.images else []
    mean_scores = [float(np.mean([view.body_part_scores[part] for view in result.images])) for part in parts]
    flags = [view.out_of_distribution for view in result.images]
    flagged = None if not flags or any(flag is None for flag in flags) else any(flags)
    return StudySignals(float(result.abnormality), max(mean_scores, default=result.body_part_confidence), flagged)


@dataclass(frozen=True)
class Histogram:
    """Bin edges over [0, 1] (increasing) and the reference's proportion in each bin (len(edges) - 1, sum 1)."""

    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    def proportions_of(self, values: Sequence[float]) -> np.ndarray:
        """(bins,) proportions of `values` in these bins; values outside the edges count in the outer bins."""
        clipped = np.clip(np.asarray(values, dtype=np.float64), self.edges[0], self.edges[-1])
        counts = np.histogram(clipped, bins=np.asarray(self.edges))[0]
        return counts / max(len(clipped), 1)

    def to_json(self) -> dict[str, list[float]]:
        """The manifest object."""
        return {"edges": list(self.edges), "proportions": list(self.proportions)}


@dataclass(frozen=True)
class PartReference:
    """One body part's validation studies: their count, two histograms and the gate's study rate."""

    studies: int
    histograms: Mapping[str, Histogram]  # by HISTOGRAM_SIGNALS name
    out_of_distribution_rate: float | None  # None: computed without a gate

    def to_json(self) -> dict[str, Any]:
        """The manifest object."""
        return {"studies": self.studies, **{name: self.histograms[name].to_json() for name in HISTOGRAM_SIGNALS},
                "out_of_distribution_rate": self.out_of_distribution_rate}


@dataclass(frozen=True)
class DriftReference:
    """The reference of every body part that had enough validation studies, and what it was computed on."""

    parts: Mapping[str, PartReference]
    computed_on: Mapping[str, Any] = field(default_factory=dict)
    bins: int = DEFAULT_BINS

    def to_json(self) -> dict[str, Any]:
        """The manifest's "drift_reference" object."""
        return {"format": REFERENCE_FORMAT, "method": "population stability index", "bins": self.bins,
                "computed_on": dict(self.computed_on),
                "body_parts": {part: self.parts[part].to_json() for part in BODY_PARTS if part in self.parts}}


def reference_histogram(values: Sequence[float], bins: int = DEFAULT_BINS) -> Histogram:
    """Histogram of reference values in [0, 1] with edges at their quantiles (ties merge bins)."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    inner = np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges = np.unique(np.concatenate([[0.0], inner, [1.0]]))
    if len(edges) < 2:  # every value 0 or 1 and bins == 1
        edges = np.array([0.0, 1.0])
    counts = np.histogram(values, bins=edges)[0]
    return Histogram(tuple(float(edge) for edge in edges), tuple(float(count) for count in counts / len(values)))


def population_stability_index(reference: Sequence[float], window: Sequence[float], epsilon: float = EPSILON) -> float:
    """PSI of two proportion vectors over the same bins: sum((w - r) * ln(w / r)), proportions floored at epsilon."""
    expected = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    actual = np.maximum(np.asarray(window, dtype=np.float64), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def status_of(psi: float) -> str:
    """"stable" under WATCH_PSI, "watch" under DRIFT_PSI, else "drift"."""
    if psi >= DRIFT_PSI:
        return "drift"
    return "watch" if psi >= WATCH_PSI else "stable"


def window_psi(reference: PartReference, window: Sequence[StudySignals]) -> dict[str, float]:
    """PSI of each signal of a window of studies against one part's reference (the gate's only when both have it)."""
    figures = {name: population_stability_index(
        reference.histograms[name].proportions,
        reference.histograms[name].proportions_of([getattr(study, name) for study in window]))
        for name in HISTOGRAM_SIGNALS}
    flags = [study.out_of_distribution for study in window if study.out_of_distribution is not None]
    if reference.out_of_distribution_rate is not None and flags:
        rate, expected = float(np.mean(flags)), reference.out_of_distribution_rate
        figures[OOD_SIGNAL] = population_stability_index([1 - expected, expected], [1 - rate, rate])
    return figures


def build_reference(signals_by_part: Mapping[str, Sequence[StudySignals]], computed_on: Mapping[str, Any],
                    bins: int = DEFAULT_BINS, min_studies: int = 1) -> DriftReference:
    """The reference of every part with at least `min_studies` studies (others are left out)."""
    parts = {}
    for part, signals in signals_by_part.items():
        if len(signals) < min_studies:
            continue
        flags = [study.out_of_distribution for study in signals]
        rate = None if any(flag is None for flag in flags) else float(np.mean(flags))
        histograms = {name: reference_histogram([getattr(study, name) for study in signals], bins)
                      for name in HISTOGRAM_SIGNALS}
        parts[part] = PartReference(len(signals), histograms, rate)
    return DriftReference(parts, dict(computed_on), bins)


def changed_models(reference: DriftReference, versions: Mapping[str, str]) -> list[str]:
    """Roles whose loaded model (file@sha256 prefix) differs from the one the reference was computed with."""
    recorded = reference.computed_on.get("models")
    if not isinstance(recorded, dict):
        return []
    return [role for role, version in versions.items() if role in recorded and recorded[role] != version]


def read_drift_reference(manifest_extra: Mapping[str, Any]) -> DriftReference | None:
    """The manifest's drift reference, validated; None when it has none.

    Raises:
        ModelRepositoryError: the "drift_reference" object is malformed; says which part and how to rewrite it.
    """
    document = manifest_extra.get(DRIFT_REFERENCE_KEY)
    if document is None:
        return None
    if not isinstance(document, dict) or document.get("format") != REFERENCE_FORMAT \
            or not isinstance(document.get("body_parts"), dict):
        _refuse(f"must be an object with format {REFERENCE_FORMAT} and 'body_parts'")
    unknown = sorted(set(document["body_parts"]) - set(BODY_PARTS))
    if unknown:
        _refuse(f"unknown body part(s) {unknown}; valid: {', '.join(BODY_PARTS)}")
    parts = {part: _parse_part(part, value) for part, value in document["body_parts"].items()}
    computed_on, bins = document.get("computed_on", {}), document.get("bins", DEFAULT_BINS)
    if not isinstance(computed_on, dict):
        _refuse("computed_on must be an object (the data, backend and models it was computed with)")
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        _refuse(f"bins must be a positive integer; got {bins!r}")
    return DriftReference(parts, computed_on, bins)


def _parse_part(part: str, document: Any) -> PartReference:
    """One body part's reference object, validated."""
    if not isinstance(document, dict):
        _refuse(f"{part} must be an object")
    studies = document.get("studies")
    if not isinstance(studies, int) or isinstance(studies, bool) or studies < 1:
        _refuse(f"{part}.studies must be a positive integer; got {studies!r}")
    rate = document.get("out_of_distribution_rate")
    if rate is not None and not is_probability(rate):
        _refuse(f"{part}.out_of_distribution_rate must be null or a number in [0, 1]; got {rate!r}")
    histograms = {name: _parse_histogram(f"{part}.{name}", document.get(name)) for name in HISTOGRAM_SIGNALS}
    return PartReference(studies, histograms, None if rate is None else float(rate))


def _parse_histogram(where: str, document: Any) -> Histogram:
    """{"edges": [...], "proportions": [...]}: increasing edges in [0, 1], proportions in [0, 1] summing to 1."""
    edges = document.get("edges") if isinstance(document, dict) else None
    proportions = document.get("proportions") if isinstance(document, dict) else None
    if not (isinstance(edges, list) and len(edges) >= 2 and all(is_probability(edge) for edge in edges)
            and all(low < high for low, high in zip(edges, edges[1:], strict=False))):
        _refuse(f"{where}.edges must be at least two increasing numbers in [0, 1]")
    if not (isinstance(proportions, list) and len(proportions) == len(edges) - 1
            and all(is_probability(value) for value in proportions)
            and math.isclose(sum(proportions), 1.0, abs_tol=1e-6)):
        _refuse(f"{where}.proportions must be one number in [0, 1] per bin ({len(edges) - 1}), summing to 1")
    return Histogram(tuple(float(edge) for edge in edges), tuple(float(value) for value in proportions))


def _refuse(problem: str) -> NoReturn:
    """Raise the ModelRepositoryError of a malformed drift reference."""
    raise ModelRepositoryError(f"manifest.json: {DRIFT_REFERENCE_KEY}: {problem}; rewrite it with {WRITE_COMMAND}"
                               f" (or remove the key to run without drift figures)")

"""What a study's numbers mean: aggregation, label, per-view results and the warnings a reader sees.

Pure functions over arrays and settings: no models, no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from classifiers.results import Explanation, ViewResult

AGGREGATIONS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda scores: float(np.mean(scores)),
    "max": lambda scores: float(np.max(scores)),
}


def aggregate(view_scores: np.ndarray, aggregation: str) -> float:
    """The study's abnormality from its views' P(abnormal), (num_views,) float in [0, 1]."""
    return AGGREGATIONS[aggregation](view_scores)


def label_of(abnormality: float, threshold: float) -> str:
    """"abnormal" at or above the expert's threshold, else "normal"."""
    return "abnormal" if abnormality >= threshold else "normal"


def view_result(name: str, body_parts: Sequence[str], router_scores: np.ndarray, abnormality: float,
                explanation: Explanation | None, ood_score: float | None, ood_threshold: float | None) -> ViewResult:
    """One view's body part (argmax of its (7,) router probabilities), its scores and the gate's verdict."""
    best = int(np.argmax(router_scores))
    return ViewResult(
        name=name,
        body_part=body_parts[best],
        body_part_confidence=float(router_scores[best]),
        body_part_scores={part: float(score) for part, score in zip(body_parts, router_scores, strict=True)},
        abnormality=float(abnormality),
        explanation=explanation,
        ood_score=ood_score,
        out_of_distribution=None if ood_score is None else bool(ood_score > ood_threshold),
    )


def study_warnings(views: Sequence[ViewResult], body_parts: Sequence[str], mean_scores: np.ndarray,
                   routed_part: str, given_part: str | None, confidence_floor: float,
                   disagreement_floor: float) -> list[str]:
    """Warnings a reader should see: views out of distribution or disagreeing, low confidence, a router that disagrees.

    `mean_scores` is the (7,) mean of the views' router probabilities, columns in `body_parts` order.
    """
    warnings = []
    flagged = [view.name for view in views if view.out_of_distribution]
    if flagged:
        warnings.append(f"views unlike the radiographs these models know (out of distribution): "
                        f"{', '.join(flagged)}; their scores may mean nothing")
    if len({view.body_part for view in views}) > 1:
        listing = ", ".join(f"{view.name}: {view.body_part}" for view in views)
        warnings.append(f"views disagree on the body part ({listing})")
    confidence = float(mean_scores[body_parts.index(routed_part)])
    if not given_part and confidence < confidence_floor:
        warnings.append(f"body part confidence {confidence:.2f} is under {confidence_floor:.2f};"
                        " check the body part or pass body_part")
    if given_part:
        given_score = float(mean_scores[body_parts.index(given_part)])
        if given_part != routed_part and given_score < disagreement_floor:
            warnings.append(f"the router strongly disagrees with body_part {given_part} ({given_score:.2f}):"
                            f" it sees {routed_part} ({confidence:.2f})")
    return warnings


def unreadable_warnings(unreadable: Sequence[tuple[str, str]]) -> list[str]:
    """One warning per view left out of a study: `unreadable` holds (error type, message naming the view)."""
    return [f"unreadable image {message}" for _error, message in unreadable]

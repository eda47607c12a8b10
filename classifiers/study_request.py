"""The typed study request every door builds: views as bytes, options parsed once by the door."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from classifiers.body_parts import normalize_body_part
from classifiers.errors import InvalidOption
from classifiers.results import ViewInput
from classifiers.study_policy import AGGREGATIONS


@dataclass(frozen=True)
class StudyRequest:
    """One study as a door hands it to `Pipeline.run`.

    The door has validated the options (the web schema, score.py's argparse choices, the PACS worker's
    fixed defaults); the pipeline trusts them.

    Attributes:
        views: the study's views in the order sent, each a name and its encoded bytes (any format).
        body_part: a normalised body-part class (skips the router's choice), or None to route.
        aggregation: a key of `classifiers.study_policy.AGGREGATIONS`.
        explain: compute each view's heatmap with the expert that scored.
        deadline: the clock time (time.monotonic()) by which the study must be done queueing, or None.
        skip_unreadable: an unreadable view is left out and reported in `StudyResult.unreadable` (the batch
            doors); when False one unreadable view refuses the study with its typed error (HTTP).
    """

    views: tuple[ViewInput, ...]
    body_part: str | None = None
    aggregation: str = "mean"
    explain: bool = False
    deadline: float | None = None
    skip_unreadable: bool = False


def build_study_request(views: Sequence[ViewInput], body_part: str | None = None, aggregation: str = "mean",
                        explain: bool = False, deadline: float | None = None,
                        skip_unreadable: bool = False) -> StudyRequest:
    """A StudyRequest from unchecked options (in-process callers); the web schema and argparse check their own.

    Raises:
        InvalidOption: an unknown aggregation or body part, naming the valid ones.
    """
    if aggregation not in AGGREGATIONS:
        raise InvalidOption(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    return StudyRequest(tuple(views), normalize_body_part(body_part) if body_part else None, aggregation, explain,
                        deadline, skip_unreadable)

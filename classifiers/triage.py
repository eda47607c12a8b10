"""Reading order of a triage worklist, shared by `score.py --worklist` and `python -m pacs worklist`.

Studies that were not scored come first: nothing says they are normal, so a person must look at them.
Then the scored studies by triage category at their expert's operating points: flagged, then indeterminate,
then low; a study without a category (its expert has no operating points) ranks with the indeterminate ones,
so a repository without operating points keeps the plain order by score. Within a rank, by abnormality,
highest first. Ties, and the unscored among themselves, go by study id, so the same studies always give the
same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

Study = TypeVar("Study")
# Rank of a scored study by its triage category (repository.entries.TRIAGE_CATEGORIES); None: no operating points.
CATEGORY_RANKS: dict[str | None, int] = {"flagged": 0, "indeterminate": 1, None: 1, "low": 2}


def is_unscored(abnormality: float | None) -> bool:
    """True when a study has no abnormality score (None or NaN)."""
    return abnormality is None or math.isnan(abnormality)


def triage_order(studies: Iterable[Study], abnormality: Callable[[Study], float | None],
                 study_id: Callable[[Study], str],
                 category: Callable[[Study], str | None] = lambda study: None) -> list[Study]:
    """The studies in reading order: unscored first (by id), then flagged, indeterminate (or none), low; each by
    abnormality, highest first, then id.

    Raises:
        ValueError: a category that is none of CATEGORY_RANKS.
    """
    def key(study: Study) -> tuple[int, float, str]:
        score = abnormality(study)
        if is_unscored(score):
            return (0, 0.0, study_id(study))
        found = category(study)
        if found not in CATEGORY_RANKS:
            raise ValueError(f"unknown triage category {found!r}; valid: flagged, indeterminate, low or none")
        return (1 + CATEGORY_RANKS[found], -float(score), study_id(study))

    return sorted(studies, key=key)

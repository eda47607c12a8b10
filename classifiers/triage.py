"""Reading order of a triage worklist, shared by `score.py --worklist` and `python -m pacs worklist`.

Studies that were not scored come first: nothing says they are normal, so a person must look at them.
Then the scored studies by abnormality, highest first. Ties, and the unscored among themselves, go by
study id, so the same studies always give the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

Study = TypeVar("Study")


def is_unscored(abnormality: float | None) -> bool:
    """True when a study has no abnormality score (None or NaN)."""
    return abnormality is None or math.isnan(abnormality)


def triage_order(studies: Iterable[Study], abnormality: Callable[[Study], float | None],
                 study_id: Callable[[Study], str]) -> list[Study]:
    """The studies in reading order: unscored first (by id), then scored by abnormality, highest first (then id)."""
    def key(study: Study) -> tuple[bool, float, str]:
        score = abnormality(study)
        return (not is_unscored(score), 0.0 if is_unscored(score) else -float(score), study_id(study))

    return sorted(studies, key=key)

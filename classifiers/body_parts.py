"""The seven body parts, the router's role name, and the one normaliser of a body part a user gives."""

from __future__ import annotations

from classifiers.errors import InvalidOption

# In the router's output order (alphabetical, as Keras' directory loaders give them).
BODY_PARTS = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
ROUTER = "router"
ROLES = (ROUTER, *BODY_PARTS)


def normalize_body_part(body_part: str) -> str:
    """Accept `XR_WRIST`, `wrist` or ` Wrist `; return `XR_WRIST`, or raise InvalidOption naming the valid ones."""
    candidate = body_part.strip().upper()
    candidate = candidate if candidate.startswith("XR_") else f"XR_{candidate}"
    if candidate not in BODY_PARTS:
        raise InvalidOption(f"unknown body_part {body_part!r}; valid: {', '.join(BODY_PARTS)}")
    return candidate

"""Bone layouts and findings of the synthetic radiograph phantoms, in a canonical frame.

The canonical frame has y pointing down and the anatomy roughly inside [-0.5, 0.5] x [-0.7, 0.7];
`training.synthetic` maps it to pixels. Every structure is a tapered capsule (`Part`): bones have a
bright cortex and darker medulla, soft tissue is a faint solid, metal is a flat bright solid, and a
lytic lesion is an expanded thin shell with a dark centre.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

Point = tuple[float, float]
# Findings are at least this big (canonical units, about 9 px at 128 px) so small bones show them too: drawn
# large on purpose, so the small demo CNN learns them in minutes on 2 cores (real findings are subtler).
MIN_FINDING_SIZE = 0.08


@dataclass(frozen=True)
class Part:
    """One tapered capsule from `start` to `end`; `kind` picks its X-ray profile."""

    start: Point
    end: Point
    start_radius: float
    end_radius: float
    kind: str = "bone"  # "bone", "tissue", "metal" or "lesion"
    density: float = 1.0
    start_flare: float = 0.0  # widening of the radius at each end (epiphysis, condyles)
    end_flare: float = 0.0
    fracturable: bool = False


@dataclass(frozen=True)
class Finding:
    """One finding: its kind, its canonical centre, and the capsules whose footprint is its box."""

    kind: str  # "fracture", "hardware" or "lesion"
    point: Point
    outline: tuple[Part, ...]  # fracture: the swelling around the break; hardware: the metal; lesion: itself


@dataclass(frozen=True)
class Phantom:
    """A body part's structures plus the canonical points where its findings lie."""

    parts: tuple[Part, ...]
    finding_points: tuple[Point, ...] = ()
    findings: tuple[Finding, ...] = ()


def _point_along(start: Point, end: Point, fraction: float, sideways: float = 0.0) -> Point:
    """Return the point `fraction` of the way from start to end, moved `sideways` to the left."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy) or 1.0
    return (start[0] + dx * fraction - dy / length * sideways, start[1] + dy * fraction + dx / length * sideways)


def _chain(rng: np.random.Generator, base: Point, angle_deg: float, lengths: list[float],
           radii: list[float], gap: float, fracturable: bool = True) -> list[Part]:
    """Return bones laid end to end from `base` (angle 0 = straight up), with joint gaps."""
    bones, point, angle = [], base, angle_deg
    for length, radius in zip(lengths, radii, strict=True):
        angle += rng.uniform(-6, 6)
        direction = (math.sin(math.radians(angle)), -math.cos(math.radians(angle)))
        end = (point[0] + direction[0] * length, point[1] + direction[1] * length)
        bones.append(Part(point, end, radius * 1.1, radius * 0.85, start_flare=0.35, end_flare=0.25,
                          fracturable=fracturable))
        point = (end[0] + direction[0] * gap, end[1] + direction[1] * gap)
    return bones


def _tissue(start: Point, end: Point, start_radius: float, end_radius: float, density: float = 0.35) -> Part:
    """Return a soft-tissue capsule."""
    return Part(start, end, start_radius, end_radius, kind="tissue", density=density)


def _carpals(rng: np.random.Generator, centre: Point, spread: float, radius: float) -> list[Part]:
    """Return two rows of four small rounded carpal bones around `centre`."""
    bones = []
    for row in range(2):
        for column in range(4):
            x = centre[0] + (column - 1.5) * spread + rng.normal(0, spread * 0.08)
            y = centre[1] - row * spread * 1.15 + rng.normal(0, spread * 0.08)
            size = radius * rng.uniform(0.8, 1.15)
            tilt = rng.uniform(0, math.pi)
            half = size * rng.uniform(0.0, 0.5)
            bones.append(Part((x - half * math.cos(tilt), y - half * math.sin(tilt)),
                              (x + half * math.cos(tilt), y + half * math.sin(tilt)), size, size, density=1.1))
    return bones


def draw_finger(rng: np.random.Generator) -> list[Part]:
    """One finger: end of the metacarpal and three phalanges in a line."""
    scale = rng.uniform(0.9, 1.1)
    lengths = [x * scale for x in (0.32, 0.40, 0.25, 0.17)]
    radii = [0.05 * scale, 0.048 * scale, 0.042 * scale, 0.036 * scale]
    bones = _chain(rng, (0.0, 0.75), rng.uniform(-5, 5), lengths, radii, 0.035)
    tip = bones[-1].end
    return [_tissue((0.0, 0.8), tip, 0.13, 0.075), *bones]


def draw_hand(rng: np.random.Generator) -> list[Part]:
    """Metacarpals and phalanges of five rays fanning out from the carpus."""
    parts = [_tissue((0.0, 0.62), (0.02, 0.05), 0.24, 0.27)]
    bones = _carpals(rng, (0.0, 0.47), 0.07, 0.032)
    bones += [Part((-0.08, 0.8), (-0.06, 0.58), 0.05, 0.065, end_flare=0.3),
              Part((0.1, 0.8), (0.09, 0.6), 0.03, 0.035, end_flare=0.2)]
    spread = rng.uniform(0.8, 1.2)
    for ray, (x, angle, finger_length) in enumerate([(-0.13, -42, 0.0), (-0.075, -12, 1.0), (-0.02, -3, 1.1),
                                                     (0.035, 6, 1.0), (0.09, 15, 0.85)]):
        if ray == 0:
            lengths, radii = [0.2, 0.16, 0.11], [0.026, 0.024, 0.02]
        else:
            lengths = [0.3 * finger_length, 0.19 * finger_length, 0.12 * finger_length, 0.08 * finger_length]
            radii = [0.022, 0.02, 0.017, 0.015]
        chain = _chain(rng, (x, 0.37), angle * spread, lengths, radii, 0.022)
        parts.append(_tissue(chain[0].end, chain[-1].end, 0.06, 0.045))
        bones += chain
    return parts + bones


def draw_wrist(rng: np.random.Generator) -> list[Part]:
    """Distal radius and ulna, two rows of carpals and the metacarpal bases."""
    parts = [_tissue((0.0, 0.8), (0.0, -0.6), 0.32, 0.36)]
    width = rng.uniform(0.9, 1.1)
    bones = [Part((-0.06 * width, 0.85), (-0.06 * width, 0.18), 0.085, 0.1, end_flare=0.45, fracturable=True),
             Part((0.17 * width, 0.85), (0.16 * width, 0.22), 0.05, 0.052, end_flare=0.25, fracturable=True)]
    bones += _carpals(rng, (0.03, 0.04), 0.095 * width, 0.05)
    for ray in range(5):
        x = (-0.16 + ray * 0.08) * width
        bones += _chain(rng, (x, -0.22), (ray - 2) * 7, [0.42], [0.036], 0.0)
    return parts + bones


def draw_forearm(rng: np.random.Generator) -> list[Part]:
    """Radius and ulna: two long, nearly parallel bones spanning the image."""
    parts = [_tissue((0.0, 0.75), (0.0, -0.75), 0.24, 0.3)]
    bow = rng.uniform(0.01, 0.04)
    radius = [Part((-0.1, 0.72), (-0.1 - bow, 0.0), 0.04, 0.034, start_flare=0.4, fracturable=True),
              Part((-0.1 - bow, 0.0), (-0.11, -0.72), 0.034, 0.05, end_flare=0.6, fracturable=True)]
    ulna = [Part((0.1, 0.75), (0.09, -0.7), 0.045, 0.03, start_flare=0.6, end_flare=0.3, fracturable=True)]
    carpals = [Part((x, -0.84), (x, -0.84), 0.05, 0.05) for x in (-0.12, 0.0, 0.12)]
    return parts + radius + ulna + carpals


def draw_elbow(rng: np.random.Generator) -> list[Part]:
    """Distal humerus meeting the radius and ulna at an angle."""
    bend = rng.uniform(15, 80) * rng.choice([-1, 1])
    joint = (0.0, 0.0)
    direction = (math.sin(math.radians(bend)), math.cos(math.radians(bend)))
    forearm_end = (joint[0] + direction[0] * 0.75, joint[1] + direction[1] * 0.75)
    side = (direction[1] * 0.09, -direction[0] * 0.09)
    parts = [_tissue((0.0, -0.8), joint, 0.3, 0.27), _tissue(joint, forearm_end, 0.26, 0.22)]
    humerus = Part((0.0, -0.8), (0.0, -0.06), 0.075, 0.08, end_flare=0.9, fracturable=True)
    ulna_start = (joint[0] - side[0] - direction[0] * 0.05, joint[1] - side[1] - direction[1] * 0.05)
    ulna = Part(ulna_start, (forearm_end[0] - side[0], forearm_end[1] - side[1]), 0.06, 0.04,
                start_flare=0.5, fracturable=True)
    radius_start = (joint[0] + side[0] + direction[0] * 0.08, joint[1] + side[1] + direction[1] * 0.08)
    radius = Part(radius_start, (forearm_end[0] + side[0], forearm_end[1] + side[1]), 0.05, 0.04,
                  start_flare=0.5, fracturable=True)
    olecranon = Part(ulna_start, (ulna_start[0] - direction[0] * 0.06, ulna_start[1] - direction[1] * 0.06),
                     0.05, 0.04, density=1.1)
    return parts + [humerus, ulna, radius, olecranon]


def draw_humerus(rng: np.random.Generator) -> list[Part]:
    """One long bone with a round head at the top and condyles at the bottom."""
    tilt = rng.uniform(-0.05, 0.05)
    parts = [_tissue((0.0, -0.75), (0.0, 0.78), 0.3, 0.24)]
    shaft = Part((0.03 + tilt, -0.55), (-tilt, 0.7), 0.06, 0.055, start_flare=0.3, end_flare=1.0,
                 fracturable=True)
    head_radius = rng.uniform(0.11, 0.13)
    head = Part((0.03 + tilt - 0.04, -0.62), (0.03 + tilt - 0.02, -0.6), head_radius, head_radius, density=1.1)
    return parts + [shaft, head]


def draw_shoulder(rng: np.random.Generator) -> list[Part]:
    """Humeral head and neck, glenoid, scapula, clavicle, acromion and a few ribs."""
    parts = [_tissue((-0.6, 0.05), (0.25, 0.0), 0.6, 0.45, density=0.3)]
    head_centre = (0.12 + rng.normal(0, 0.02), -0.02 + rng.normal(0, 0.02))
    bones = [Part(head_centre, head_centre, 0.17, 0.17, density=1.0),
             Part((head_centre[0] + 0.04, head_centre[1] + 0.1), (head_centre[0] + 0.08, 0.75), 0.1, 0.075,
                  fracturable=True),
             Part((-0.12, -0.1), (-0.13, 0.1), 0.045, 0.045, density=1.1),  # glenoid
             Part((-0.14, 0.0), (-0.45, 0.55), 0.09, 0.05, density=0.45),  # scapular body
             Part((-0.7, -0.45), (-0.25, -0.38), 0.045, 0.04, fracturable=True),  # clavicle, medial half
             Part((-0.25, -0.38), (0.08, -0.33), 0.04, 0.045, end_flare=0.3, fracturable=True),
             Part((0.02, -0.3), (0.2, -0.26), 0.035, 0.04)]  # acromion
    for rib in range(4):
        y = -0.15 + rib * 0.22
        arc = [(-0.75, y + 0.12), (-0.55, y - 0.02), (-0.35, y + 0.05), (-0.22, y + 0.25)]
        bones += [Part(a, b, 0.022, 0.022, density=0.5) for a, b in itertools.pairwise(arc)]
    return parts + bones


LAYOUTS: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "XR_ELBOW": draw_elbow, "XR_FINGER": draw_finger, "XR_FOREARM": draw_forearm, "XR_HAND": draw_hand,
    "XR_HUMERUS": draw_humerus, "XR_SHOULDER": draw_shoulder, "XR_WRIST": draw_wrist,
}


def _fracture(bone: Part, rng: np.random.Generator) -> tuple[list[Part], Point]:
    """Break a bone into two displaced, angulated pieces with a clear gap."""
    fraction = rng.uniform(0.35, 0.65)
    mean_radius = (bone.start_radius + bone.end_radius) / 2
    gap = max(MIN_FINDING_SIZE, 0.4 * mean_radius) / 2
    length = math.hypot(bone.end[0] - bone.start[0], bone.end[1] - bone.start[1])
    shift = max(MIN_FINDING_SIZE, rng.uniform(0.7, 1.0) * mean_radius) * rng.choice([-1, 1])
    radius_at_break = bone.start_radius + (bone.end_radius - bone.start_radius) * fraction
    near = replace(bone, end=_point_along(bone.start, bone.end, fraction - gap / length),
                   end_radius=radius_at_break, end_flare=0.0)
    far = replace(bone, start=_point_along(bone.start, bone.end, fraction + gap / length, shift),
                  end=_point_along(bone.start, bone.end, 1.0, shift * rng.uniform(1.5, 3.0)),
                  start_radius=radius_at_break, start_flare=0.0)
    site = _point_along(bone.start, bone.end, fraction)
    swelling_radius = max(2 * MIN_FINDING_SIZE, 2.5 * mean_radius)  # soft-tissue swelling around the break
    swelling = Part(site, _point_along(bone.start, bone.end, fraction + 0.5 * swelling_radius / length),
                    swelling_radius, swelling_radius, kind="tissue", density=0.8)
    return [near, far, swelling], site


def _hardware(bone: Part, rng: np.random.Generator) -> tuple[list[Part], Point]:
    """Return bright metal: a plate with screws, a few large screws, or crossed wires."""
    radius = (bone.start_radius + bone.end_radius) / 2
    style = rng.choice(["plate", "screws", "wires"])
    start, end = rng.uniform(0.2, 0.35), rng.uniform(0.65, 0.8)
    metal = []
    if style == "plate":
        side = radius * 1.05 * rng.choice([-1, 1])
        plate_radius = max(0.018, 0.28 * radius)
        plate_start = _point_along(bone.start, bone.end, start, side)
        plate_end = _point_along(bone.start, bone.end, end, side)
        metal.append(Part(plate_start, plate_end, plate_radius, plate_radius, kind="metal", density=4.0))
    count = {"plate": rng.integers(3, 6), "screws": rng.integers(2, 4), "wires": 2}[style]
    for index in range(count):
        fraction = start + (end - start) * (index + 0.5) / count
        reach = max(1.5 * MIN_FINDING_SIZE, radius * 1.4) * (1.0 if style != "wires" else 2.8)
        slant = 0.0 if style != "wires" else (1 if index % 2 else -1) * 2.5 * radius
        thickness = max(0.011, 0.16 * radius) if style != "screws" else max(0.014, 0.3 * radius)
        metal.append(Part(_point_along(bone.start, bone.end, fraction - slant / 4, -reach),
                          _point_along(bone.start, bone.end, fraction + slant / 4, reach),
                          thickness, thickness, kind="metal", density=4.0))
    return metal, _point_along(bone.start, bone.end, (start + end) / 2)


def _lesion(bone: Part, rng: np.random.Generator) -> tuple[list[Part], Point]:
    """Return an expansile lytic lesion: a swollen thin shell with a dark centre."""
    fraction = rng.uniform(0.3, 0.7)
    radius = max(1.2 * MIN_FINDING_SIZE, (bone.start_radius + bone.end_radius) / 2 * rng.uniform(1.25, 1.5))
    length = math.hypot(bone.end[0] - bone.start[0], bone.end[1] - bone.start[1])
    half = min(0.3, radius * rng.uniform(0.4, 1.0) / length)
    lesion = Part(_point_along(bone.start, bone.end, max(0.05, fraction - half)),
                  _point_along(bone.start, bone.end, min(0.95, fraction + half)),
                  radius, radius, kind="lesion", density=1.6)
    return [lesion], _point_along(bone.start, bone.end, fraction)


FINDINGS = {"fracture": _fracture, "hardware": _hardware, "lesion": _lesion}


def add_findings(parts: list[Part], rng: np.random.Generator, count: int = 1) -> Phantom:
    """Put `count` findings (fracture, hardware, lytic lesion) on the larger fracturable bones."""
    parts = list(parts)
    findings = []
    for _ in range(count):
        candidates = [index for index, part in enumerate(parts) if part.fracturable]
        if not candidates:  # one finding per bone; a single-bone part keeps its first finding
            break
        weights = np.array([parts[index].start_radius for index in candidates]) ** 2
        chosen = candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]
        kind = str(rng.choice(list(FINDINGS)))
        new_parts, point = FINDINGS[kind](parts[chosen], rng)
        bone = parts[chosen]
        if kind == "fracture":
            parts[chosen:chosen + 1] = [replace(piece, fracturable=False) for piece in new_parts[:2]]
            parts.insert(0, new_parts[2])
            # The box marks the break (gap, fragment ends, swelling), not the whole displaced shaft.
            outline = (new_parts[2],)
        else:
            parts[chosen] = replace(bone, fracturable=False)
            parts += new_parts
            outline = tuple(new_parts)
        findings.append(Finding(kind, point, outline))
    return Phantom(tuple(parts), tuple(finding.point for finding in findings), tuple(findings))


@dataclass(frozen=True)
class ViewGeometry:
    """Canonical-to-pixel mapping of one view: pixel = matrix @ canonical + offset."""

    matrix: np.ndarray  # (2, 2)
    offset: np.ndarray  # (2,)
    scale: float  # pixels per canonical unit, for radii

    def apply(self, point: Sequence[float]) -> np.ndarray:
        """Map one canonical (x, y) point to pixel (x, y)."""
        return self.matrix @ np.asarray(point, dtype=np.float64) + self.offset

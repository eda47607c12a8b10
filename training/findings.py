"""Where the synthetic findings lie in each written image: boxes in pixels of the written view."""

from __future__ import annotations

import math

from training.phantoms import Finding, ViewGeometry

# Metal is drawn anti-aliased half a pixel beyond its radius; one pixel more keeps rounding inside the box.
EDGE_PIXELS = 1.5


def finding_box(finding: Finding, geometry: ViewGeometry, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Return the pixel box (x0, y0, x1, y1) of a finding's outline in a (height, width) view, None when outside."""
    height, width = size
    lows, highs = [], []
    for part in finding.outline:
        reach = max(part.start_radius, part.end_radius) * geometry.scale + EDGE_PIXELS
        for point in (geometry.apply(part.start), geometry.apply(part.end)):
            lows.append(point - reach)
            highs.append(point + reach)
    x0 = max(0, math.floor(min(low[0] for low in lows)))
    y0 = max(0, math.floor(min(low[1] for low in lows)))
    x1 = min(width, math.ceil(max(high[0] for high in highs)))
    y1 = min(height, math.ceil(max(high[1] for high in highs)))
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None

"""A class activation map laid over its view: upsampling, the peak in the view's pixels, a PNG overlay."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from classifiers.decoding.imaging import resize_image
from classifiers.results import Explanation

MAX_OVERLAY_SIDE = 1024
OVERLAY_OPACITY = 0.55
PNG_COMPRESS_LEVEL = 1  # an overlay is sent once: speed matters more than the last 10 % of bytes
# Colour ramp of the heat (0 -> transparent blue, 1 -> red), as (position, (r, g, b)) stops.
_RAMP = ((0.0, (0, 0, 160)), (0.35, (0, 160, 255)), (0.6, (90, 255, 90)), (0.8, (255, 220, 0)), (1.0, (255, 0, 0)))


def overlay_size(width: int, height: int, max_side: int = MAX_OVERLAY_SIDE) -> tuple[int, int]:
    """(width, height) of the overlay: the view's size, or at most `max_side` on the long side, same aspect."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def upsample_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of an (h, w) map to (height, width) = size[::-1], cell centres on pixel centres."""
    return np.asarray(Image.fromarray(cam.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))


def peak_of(heat: np.ndarray, view_size: tuple[int, int]) -> tuple[int, int]:
    """The hottest pixel of an upsampled map, as (x, y) in pixels of a view of (width, height) = view_size."""
    row, column = np.unravel_index(int(np.argmax(heat)), heat.shape)
    width, height = view_size
    x = min(width - 1, int((column + 0.5) * width / heat.shape[1]))
    y = min(height - 1, int((row + 0.5) * height / heat.shape[0]))
    return x, y


def normalized(heat: np.ndarray) -> np.ndarray:
    """Positive evidence scaled to [0, 1] (ReLU, then divided by the maximum); all zero when there is none."""
    positive = np.clip(heat, 0.0, None)
    top = float(positive.max())
    return positive / top if top > 0 else positive


def colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) heat in [0, 1] -> (H, W, 3) uint8 colours along the ramp."""
    positions = [stop[0] for stop in _RAMP]
    channels = [np.interp(heat, positions, [stop[1][channel] for stop in _RAMP]) for channel in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def render_overlay(view: Image.Image, heat: np.ndarray, peak: tuple[int, int]) -> bytes:
    """PNG of the view (8-bit L or RGB) with the [0, 1] heat blended over it and a ring at the peak (view pixels)."""
    size = (heat.shape[1], heat.shape[0])
    base = resize_image(view, (size[1], size[0])).astype(np.float32)
    alpha = (OVERLAY_OPACITY * heat)[..., None]
    blended = base * (1 - alpha) + colorize(heat).astype(np.float32) * alpha
    image = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    scale = size[0] / view.width
    x, y, radius = peak[0] * scale, peak[1] * scale, max(4.0, 0.025 * max(size))
    ImageDraw.Draw(image).ellipse((x - radius, y - radius, x + radius, y + radius), outline=(255, 255, 255),
                                  width=max(1, round(radius / 4)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def combined_heat(maps: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """The product of the views' maps, each upsampled to size = (width, height) and scaled to [0, 1]."""
    heat = normalized(upsample_map(maps[0], size))
    for refine in maps[1:]:
        heat = normalized(heat * normalized(upsample_map(refine, size)))
    return heat


def explain_view(view: Image.Image, maps: list[np.ndarray], method: str, with_overlay: bool = True,
                 model: str = "") -> Explanation:
    """Upsample one view's (h, w) maps to the overlay size, combine them, find the peak, draw the overlay."""
    size = overlay_size(view.width, view.height)
    heat = combined_heat(maps, size)
    # No positive evidence anywhere: the least negative place of the primary map is still the peak.
    peak = peak_of(heat if heat.max() > 0 else upsample_map(maps[0], size), (view.width, view.height))
    return Explanation(method, peak, render_overlay(view, heat, peak) if with_overlay else b"", view.size, model)

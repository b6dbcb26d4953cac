"""Synthetic PNG images as data URLs for vision-model requests, cached per size."""

from __future__ import annotations

import base64
import binascii
import functools
import io
import random
import struct

from PIL import Image, ImageDraw

__all__ = ["png_data_url", "png_size_from_data_url"]

_PNG_PREFIX = "data:image/png;base64,"


@functools.lru_cache(maxsize=32)
def png_data_url(width: int, height: int) -> str:
    """Return a PNG data URL of a ``width`` x ``height`` picture: gradient, shapes and text-like bars.

    The picture depends only on its size, so requests of one size share one string
    (a 1920x1080 image takes about 0.1 s to draw and encode the first time).
    """
    rng = random.Random(width * 100_003 + height)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    top = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    bottom = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    for row in range(height):
        share = row / max(1, height - 1)
        color = tuple(round(a + (b - a) * share) for a, b in zip(top, bottom))
        draw.line([(0, row), (width, row)], fill=color)

    # A few shapes and rows of "text" bars, like a photo of a document or a UI screenshot.
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = min(width - 1, x0 + rng.randrange(1, max(2, width // 3))), min(height - 1, y0 + rng.randrange(1, max(2, height // 3)))
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], fill=fill)
        else:
            draw.ellipse([x0, y0, max(x0, x1), max(y0, y1)], fill=fill)
    line_height = max(4, height // 40)
    for row in range(line_height * 2, height // 2, line_height * 2):
        length = rng.randrange(width // 4, max(width // 4 + 1, width * 3 // 4))
        draw.rectangle([width // 10, row, width // 10 + length, row + line_height // 2], fill=(30, 30, 30))

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return _PNG_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_size_from_data_url(url: str) -> tuple[int, int] | None:
    """Return (width, height) read from a PNG data URL's IHDR chunk, or None for other URLs."""
    if not url.startswith(_PNG_PREFIX):
        return None
    try:
        header = base64.b64decode(url[len(_PNG_PREFIX) : len(_PNG_PREFIX) + 32])
    except (binascii.Error, ValueError):
        return None
    if len(header) < 24 or header[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)

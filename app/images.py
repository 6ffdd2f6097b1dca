"""Validate uploaded images with Pillow before anything is stored.

An image is accepted only if Pillow can identify it, its pixel count is within the limit
(checked from the header, before any pixel is decoded: the decompression-bomb guard), its
structure verifies and its pixels decode.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"})

# Magic numbers, so the image endpoint can send a Content-Type without decoding the file.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


class ImageRejected(ValueError):
    """The bytes are not an image nextlabel accepts; the message says why, for a person."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str


def inspect_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Check that `data` is a whole, decodable image of at most `max_pixels` pixels."""
    if not data:
        raise ImageRejected("empty file")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is stricter and checked first; Pillow's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return _inspect(data, max_pixels=max_pixels)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not an image (Pillow cannot identify the format)") from None
    except Image.DecompressionBombError:
        raise ImageRejected("image has too many pixels (decompression-bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise ImageRejected(f"corrupt image: {exc}") from None


def _inspect(data: bytes, *, max_pixels: int) -> ImageInfo:
    with Image.open(io.BytesIO(data)) as image:
        image_format = image.format or ""
        width, height = image.size
        if image_format not in ACCEPTED_FORMATS:
            raise ImageRejected(
                f"unsupported image format {image_format or 'unknown'}; "
                f"accepted: {', '.join(sorted(ACCEPTED_FORMATS))}"
            )
        if width < 1 or height < 1:
            raise ImageRejected("image has no pixels")
        if width * height > max_pixels:
            raise ImageRejected(
                f"image is {width}×{height} = {width * height:,} pixels; "
                f"the limit is {max_pixels:,}"
            )
        image.verify()
    # verify() leaves the image unusable, and it misses truncated pixel data: decode for real.
    with Image.open(io.BytesIO(data)) as image:
        image.load()
    return ImageInfo(width=width, height=height, format=image_format)


def sniff_media_type(data: bytes) -> str:
    """The Content-Type of stored image bytes, from their first bytes."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def encode_png(pixels: object) -> bytes:
    """PNG bytes of a uint8 array shaped [H, W] or [H, W, C] (C = 1, 3 or 4)."""
    image = Image.fromarray(pixels)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

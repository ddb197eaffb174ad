"""Images whose encoded bytes are a table's cell (a Parquet image source), decoded exactly as
the same bytes would be from a file: first frame, EXIF orientation, RGB, optional JPEG draft."""

from __future__ import annotations

import io

from PIL import Image

from ducho_fast.core.blobs import blob_bytes
from ducho_fast.core.image import decode_image
from ducho_fast.core.records import Blob


def decode_blob(blob: Blob, draft_side: int | None = None) -> Image.Image:
    """The same decode as a file's, draft geometry included (see core.image.decode_image)."""
    return decode_image(io.BytesIO(blob_bytes(blob)), draft_side)

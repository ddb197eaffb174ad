"""Peers: what an engineer would pick instead of ducho-fast, measured in the same run.

Each peer is the way its library's documentation says to use it, on the same model and data:
sentence-transformers with its torch, ONNX and OpenVINO backends (fp32, its bf16 option, its
dynamic int8 ONNX export), fastembed on the same ONNX export, and a plain torch script with
bf16 autocast for images. Exports a peer needs (ONNX, OpenVINO IR) are made once, before any
timing, as a user would save them; they are never timed. Peers are optional installs (the
`peers` extra): a peer whose library is missing is skipped with the reason.

A peer's model is two steps so that both levels of the comparison are fair:
- `prepare`: inputs as the library takes them (texts; or pixel tensors from the model's own
  processor), untimed in "pure" figures;
- `infer`: prepared inputs to features, in input order.
Text peers tokenize inside `infer` (their API does); ducho-fast's text figures at the same
level include tokenisation too (see `bench.peer_run`).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.core.table import Table


@dataclass(frozen=True)
class PeerModel:
    """`prepare` turns payloads into batches; `infer` turns those batches into (N, D) rows."""

    prepare: Callable[[Sequence[Any]], list[Any]]
    infer: Callable[[list[Any]], np.ndarray]
    preprocess: Callable[[Any], Any] | None = None  # one decoded image -> one input (images)
    infer_batch: Callable[[Any], np.ndarray] | None = None  # one collated batch (images)
    note: str = ""
    # The arithmetic the peer really runs (fp32, bf16, int8): a peer's default may be reduced
    # precision without saying so (OpenVINO runs bf16 by default on CPUs with native bf16).
    arithmetic: str = "fp32"


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # text | image
    summary: str
    requires: tuple[str, ...]
    fits: Callable[[str], bool]
    open: Callable[[str, int, Path], PeerModel]  # (model, batch size, folder for its exports)


PEERS: Table[Peer] = Table("peer", __name__)


def missing(peer: Peer) -> list[str]:
    return [m for m in peer.requires if importlib.util.find_spec(m) is None]


def peers_for(model: str, kind: str) -> list[Peer]:
    return [p for p in PEERS.values() if p.kind == kind and p.fits(model)]


def is_sentence_transformer(model: str) -> bool:
    return (Path(model) / "modules.json").is_file()


def is_hf_image_model(model: str) -> bool:
    return (Path(model) / "preprocessor_config.json").is_file()


def is_torchvision(model: str) -> bool:
    from ducho_fast.models.torchvision_models import torchvision_name

    return torchvision_name(model) is not None


# sentence-transformers ------------------------------------------------------------------------


def st_copy(model: str, folder: Path) -> Path:
    """A private copy of the model folder: backends write their exports into it."""
    if not folder.exists():
        shutil.copytree(model, folder)
    return folder


def st_model(
    model: str,
    batch_size: int,
    folder: Path,
    backend: str,
    arithmetic: str = "fp32",
    **kwargs: Any,
) -> PeerModel:
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(folder), device="cpu", backend=backend, **kwargs)
    saved = {"onnx": "onnx/model.onnx", "openvino": "openvino/openvino_model.xml"}.get(backend)
    if saved and not (folder / saved).is_file():
        encoder.save_pretrained(str(folder))  # as its docs advise: export once, load after

    def infer(batches: list[Any]) -> np.ndarray:
        texts = [text for batch in batches for text in batch]
        rows = encoder.encode(texts, batch_size=batch_size, convert_to_tensor=True)
        return rows.float().numpy()

    if backend == "openvino":
        network = encoder[0].auto_model
        if network.request is None:  # optimum compiles on first use
            network.compile()
        arithmetic = openvino_arithmetic(network.request)
    return PeerModel(
        prepare=lambda texts: [list(texts)], infer=infer, note=backend, arithmetic=arithmetic
    )


def openvino_arithmetic(compiled: Any) -> str:
    """What OpenVINO really computes in: its CPU plugin picks bf16 by itself where the CPU has
    native bf16 (AVX-512 BF16, AMX) unless told otherwise."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(hint, hint)


def st_torch(model: str, batch_size: int, work: Path) -> PeerModel:
    return st_model(model, batch_size, Path(model), "torch")


def st_torch_bf16(model: str, batch_size: int, work: Path) -> PeerModel:
    import torch

    kwargs = {"model_kwargs": {"torch_dtype": torch.bfloat16}}
    return st_model(model, batch_size, Path(model), "torch", "bf16", **kwargs)


def st_onnx(model: str, batch_size: int, work: Path) -> PeerModel:
    return st_model(model, batch_size, st_copy(model, work / "st-onnx"), "onnx")


def st_onnx_qint8(model: str, batch_size: int, work: Path) -> PeerModel:
    """sentence-transformers' dynamic int8 ONNX export for AVX-512 VNNI CPUs."""
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    folder = st_copy(model, work / "st-onnx")
    quantized = "onnx/model_qint8_avx512_vnni.onnx"
    if not (folder / quantized).is_file():
        st_model(model, batch_size, folder, "onnx")  # the fp32 export first
        exporter = SentenceTransformer(str(folder), device="cpu", backend="onnx")
        export_dynamic_quantized_onnx_model(exporter, "avx512_vnni", str(folder))
    kwargs = {"model_kwargs": {"file_name": quantized}}
    return st_model(model, batch_size, folder, "onnx", "int8", **kwargs)


def st_openvino(model: str, batch_size: int, work: Path, hint: str | None = None) -> PeerModel:
    folder = st_copy(model, work / "st-openvino")
    kwargs = {"model_kwargs": {"ov_config": {"INFERENCE_PRECISION_HINT": hint}}} if hint else {}
    return st_model(model, batch_size, folder, "openvino", **kwargs)


def fastembed_model(model: str, batch_size: int, work: Path) -> PeerModel:
    """fastembed on sentence-transformers' ONNX export of the same model (mean pooling and
    normalisation, as the model's modules.json says)."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    folder = st_copy(model, work / "st-onnx")
    if not (folder / "onnx" / "model.onnx").is_file():
        st_model(model, batch_size, folder, "onnx")
    name = f"local/{Path(model).name}"
    if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        dim = int(st_model(model, batch_size, folder, "onnx").infer([["x"]]).shape[1])
        TextEmbedding.add_custom_model(
            name, PoolingType.MEAN, normalization=True, sources=ModelSource(hf=name), dim=dim
        )
    encoder = TextEmbedding(name, specific_model_path=str(folder))

    def infer(batches: list[Any]) -> np.ndarray:
        texts = [text for batch in batches for text in batch]
        return np.stack(list(encoder.embed(texts, batch_size=batch_size)))

    return PeerModel(prepare=lambda texts: [list(texts)], infer=infer)


for _name, _summary, _open, _requires in (
    ("st-torch", "sentence-transformers, torch backend, fp32", st_torch, ()),
    ("st-torch-bf16", "sentence-transformers, torch backend, bf16 weights", st_torch_bf16, ()),
    ("st-onnx", "sentence-transformers, ONNX backend (optimum), fp32", st_onnx, ("optimum",)),
    (
        "st-onnx-qint8",
        "sentence-transformers, dynamic int8 ONNX export (avx512_vnni)",
        st_onnx_qint8,
        ("optimum",),
    ),
    (
        "st-openvino",
        "sentence-transformers, OpenVINO backend, default hints (bf16 where the CPU has it)",
        st_openvino,
        (),
    ),
    (
        "st-openvino-fp32",
        "sentence-transformers, OpenVINO backend, f32 precision hint",
        lambda m, b, w: st_openvino(m, b, w, "f32"),
        (),
    ),
    (
        "st-openvino-bf16",
        "sentence-transformers, OpenVINO backend, bf16 precision hint",
        lambda m, b, w: st_openvino(m, b, w, "bf16"),
        (),
    ),
    ("fastembed", "fastembed on the same ONNX export", fastembed_model, ("fastembed",)),
):
    extra = ("openvino", "optimum.intel") if "openvino" in _name else ()
    PEERS.register(
        Peer(
            _name,
            "text",
            _summary,
            ("sentence_transformers", *_requires, *extra),
            is_sentence_transformer,
            _open,
        )
    )


# a plain torch script for images -----------------------------------------------------------


def image_forward(model: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(preprocess one RGB image, forward a batch): the model's own processor and features,
    as a user's script would call them."""
    if is_torchvision(model):
        return torchvision_forward(model)
    if is_pickle(model):
        return pickle_forward(model)
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(model)
    network = AutoModel.from_pretrained(model).eval()

    def preprocess(image: Any) -> Any:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    if hasattr(network, "get_image_features"):
        return preprocess, lambda pixels: network.get_image_features(pixel_values=pixels)
    return preprocess, lambda pixels: network(pixel_values=pixels).pooler_output


def torchvision_forward(model: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Ducho's preprocessing for torchvision models (bicubic resize, ImageNet normalisation,
    which ducho-fast reproduces) and the pooled features, the classifier dropped."""
    import torch

    from ducho_fast.models.torchvision_models import seeded_random_model, torchvision_name

    name = torchvision_name(model)
    assert name is not None
    network = seeded_random_model(name)  # no hub here; the weights of ducho-fast's `none`
    network.fc = torch.nn.Identity()
    return ducho_transforms(model), network.eval()


def pickle_forward(model: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """A pickled module (the user's own architecture) as their script would run it."""
    import torch

    network = torch.load(model, map_location="cpu", weights_only=False)
    return ducho_transforms(model), network.eval()


def ducho_transforms(model: str) -> Callable[[Any], Any]:
    """Ducho's torchvision preprocessing: bicubic resize to the size, ImageNet normalisation."""
    from torchvision import transforms

    from ducho_fast.models.spec import ModelRef
    from ducho_fast.models.torchvision_models import ducho_image_spec

    spec = ducho_image_spec(ModelRef(model))
    return transforms.Compose(
        [
            transforms.Resize(spec.resize, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )


def torch_script(model: str, batch_size: int, work: Path, bf16: bool = False) -> PeerModel:
    import torch

    preprocess, forward = image_forward(model)

    def infer_batch(pixels: Any) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            rows = forward(pixels)
        return rows.float().reshape(len(rows), -1).numpy()

    def prepare(images: Sequence[Any]) -> list[Any]:
        return [
            torch.stack([preprocess(image) for image in images[start : start + batch_size]])
            for start in range(0, len(images), batch_size)
        ]

    return PeerModel(
        prepare=prepare,
        infer=lambda batches: np.concatenate([infer_batch(b) for b in batches]),
        preprocess=preprocess,
        infer_batch=infer_batch,
        arithmetic="bf16" if bf16 else "fp32",
    )


def is_pickle(model: str) -> bool:
    from ducho_fast.models.torchvision_models import PICKLE_SUFFIXES

    return Path(model).is_file() and Path(model).suffix in PICKLE_SUFFIXES


def fits_image(model: str) -> bool:
    return is_hf_image_model(model) or is_torchvision(model) or is_pickle(model)


PEERS.register(
    Peer("torch-script", "image", "plain torch script, fp32", ("torch",), fits_image, torch_script)
)
PEERS.register(
    Peer(
        "torch-script-bf16",
        "image",
        "plain torch script, bf16 autocast",
        ("torch",),
        fits_image,
        lambda m, b, w: torch_script(m, b, w, bf16=True),
    )
)


def is_hf_dual_encoder(model: str) -> bool:
    """A transformers folder with its own text tower (CLIP, SigLIP): not sentence-transformers."""
    import json

    config = Path(model) / "config.json"
    if not config.is_file() or is_sentence_transformer(model):
        return False
    return "text_config" in json.loads(config.read_text())


def torch_text_script(model: str, batch_size: int, work: Path, bf16: bool = False) -> PeerModel:
    """The text tower as a user's script calls it: the tokenizer padding each batch to its
    longest text, `get_text_features`, optionally under bf16 autocast."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    network = AutoModel.from_pretrained(model).eval()

    def infer(batches: list[Any]) -> np.ndarray:
        texts = [text for batch in batches for text in batch]
        parts = []
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                return_tensors="pt",
            )
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                parts.append(network.get_text_features(**tokens).float().numpy())
        return np.concatenate(parts)

    return PeerModel(
        prepare=lambda texts: [list(texts)], infer=infer, arithmetic="bf16" if bf16 else "fp32"
    )


PEERS.register(
    Peer(
        "torch-script-text",
        "text",
        "plain torch script, fp32 (CLIP-style text tower)",
        ("torch",),
        is_hf_dual_encoder,
        torch_text_script,
    )
)
PEERS.register(
    Peer(
        "torch-script-text-bf16",
        "text",
        "plain torch script, bf16 autocast (CLIP-style text tower)",
        ("torch",),
        is_hf_dual_encoder,
        lambda m, b, w: torch_text_script(m, b, w, bf16=True),
    )
)

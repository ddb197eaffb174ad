"""The Ducho-style baseline: what Ducho 2.0 does, reimplemented faithfully so it runs here.

Eager PyTorch, the model's own Hugging Face processor (or Ducho's torchvision transforms),
a DataLoader with workers, batch 32, text padded to the maximum length where Ducho pads
(CLIP: 77), the transformers text backend's `pooler_output` over batches in file order
padded to their longest text (Ducho's code pads with `padding=True`; a second flavour pads to
the tokenizer's maximum, 512, as the benchmark issue describes Ducho), the torchvision feature
extractor re-traced for every batch and returning every node up to the layer (as Ducho's
does, which keeps all those activations alive), and one `.npy` of shape (1, D) written per
item. sentence-transformers runs through `SentenceTransformer.encode`, as in Ducho. Ducho
itself cannot run here (it imports TensorFlow at start-up); these are its code paths, not its
code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.records import Item


@dataclass(frozen=True)
class BaselineJob:
    model: str
    kind: str  # image | text
    output: Path
    batch_size: int = 32
    workers: int = 2
    weights: str = "DEFAULT"
    # ducho-transformers-text: a text model through AutoModel, padded as Ducho's code pads
    # (to each batch's longest); ducho-transformers-text-512: padded to the tokenizer's
    # maximum (512 for BERT-like models), as the benchmark issue describes Ducho
    flavour: str = "ducho"


class ImageFiles(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[Item], transform: Callable[[Any], torch.Tensor]):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        from PIL import Image

        with Image.open(self.items[index].path) as image:
            return index, self.transform(image.convert("RGB"))


def write_per_item(output: Path, ids: Sequence[str], features: np.ndarray) -> None:
    output.mkdir(parents=True, exist_ok=True)
    for item_id, row in zip(ids, features, strict=True):
        np.save(output / f"{item_id}.npy", row.reshape(1, -1).astype(np.float32))


def image_loader(job: BaselineJob, items: Sequence[Item], transform) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        ImageFiles(items, transform),
        batch_size=job.batch_size,
        num_workers=job.workers,
        shuffle=False,
    )


def run_images(job: BaselineJob, items: Sequence[Item], timer: StageTimer) -> None:
    forward, transform = image_model(job)
    for indices, pixels in image_loader(job, items, transform):
        with timer.stage("inference"), torch.inference_mode():
            features = forward(pixels).reshape(len(pixels), -1).numpy()
        with timer.stage("write"):
            write_per_item(job.output, [items[i].item_id for i in indices.tolist()], features)
        timer.count(len(indices))


def image_model(job: BaselineJob) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable]:
    from ducho_fast.models.torchvision_models import torchvision_name

    if torchvision_name(job.model) is not None:
        return torchvision_model(job)
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(job.model)
    model = AutoModel.from_pretrained(job.model).eval()

    def transform(image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    if hasattr(model, "get_image_features"):
        return (lambda pixels: model.get_image_features(pixel_values=pixels)), transform
    return (lambda pixels: model(pixel_values=pixels).pooler_output), transform


def torchvision_model(job: BaselineJob):
    """Ducho's torch path with `reshape: [224, 224]` and `preprocessing: zscore`: bicubic
    resize, ToTensor, ImageNet Normalize; the FX extractor built anew for every batch."""
    from torchvision import models, transforms
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    from ducho_fast.models.spec import ModelRef
    from ducho_fast.models.torchvision_models import (
        ducho_image_spec,
        seeded_random_model,
        torchvision_name,
    )

    name = torchvision_name(job.model)
    if job.weights.lower() == "none":
        model = seeded_random_model(name)
    elif Path(job.weights).is_file():
        model = models.get_model(name, weights=None)
        model.load_state_dict(torch.load(job.weights, map_location="cpu", weights_only=True))
    else:
        model = models.get_model(name, weights=job.weights)
    model.eval()
    spec = ducho_image_spec(ModelRef(job.model))
    transform = transforms.Compose(
        [
            transforms.Resize(spec.resize, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        # Ducho re-traces every batch, naming every eval node up to the wanted layer
        nodes = get_graph_node_names(model)[1]
        wanted = nodes[: nodes.index("avgpool") + 1]
        extractor = create_feature_extractor(model, {n: f"layer{i}" for i, n in enumerate(wanted)})
        return extractor(pixels)[f"layer{len(wanted) - 1}"]

    return forward, transform


def run_texts(job: BaselineJob, items: Sequence[Item], timer: StageTimer) -> None:
    encode = text_model(job)
    texts = [item.text or "" for item in items]
    for start in range(0, len(texts), job.batch_size):
        chunk = texts[start : start + job.batch_size]
        with timer.stage("inference"), torch.inference_mode():
            features = encode(chunk)
        with timer.stage("write"):
            ids = [item.item_id for item in items[start : start + len(chunk)]]
            write_per_item(job.output, ids, features)
        timer.count(len(chunk))


def text_model(job: BaselineJob) -> Callable[[list[str]], np.ndarray]:
    from transformers import AutoModel, AutoTokenizer

    is_sentence_transformer = (Path(job.model) / "modules.json").is_file()
    if is_sentence_transformer and job.flavour == "ducho":
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(job.model, device="cpu")
        return lambda texts: encoder.encode(texts, batch_size=job.batch_size)
    tokenizer = AutoTokenizer.from_pretrained(job.model)
    model = AutoModel.from_pretrained(job.model).eval()
    if hasattr(model, "get_text_features"):
        length = int(model.config.text_config.max_position_embeddings)

        def clip_text(texts: list[str]) -> np.ndarray:
            tokens = tokenizer(
                texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
            )
            return model.get_text_features(**tokens).numpy()

        return clip_text

    padding = "max_length" if job.flavour.endswith("-512") else True

    def transformers_text(texts: list[str]) -> np.ndarray:
        # Ducho: batch_encode_plus(padding=True, truncation=True), then getattr(output, layer)
        tokens = tokenizer(texts, padding=padding, truncation=True, return_tensors="pt")
        return model(**tokens).pooler_output.numpy()

    return transformers_text


def run_baseline(job: BaselineJob, items: Sequence[Item]) -> dict:
    timer = StageTimer()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    if job.kind == "image":
        run_images(job, items, timer)
    else:
        run_texts(job, items, timer)
    return timer.summary()

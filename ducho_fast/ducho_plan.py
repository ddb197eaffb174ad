"""From a Ducho config to an extraction plan: Ducho's paths, our passes.

Layout (as Ducho writes it): `<dataset_path>/<output_path>/<backend>/<model>/<layer>/<id>.npy`,
float32 (1, D). Compact output (features.npy, ids.txt, manifest.json per model and layer) goes
to `<dataset_path>/ducho-fast/<modality>/<source>/<backend>/<model>/<layer>/`, run state into the
output it describes (`<dataset_path>/<output_path>/.ducho-fast/state/`). Differences from
Ducho, where Ducho is wrong, are listed in the README.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ducho_fast.config import DuchoConfig, ModelEntry, SourceBlock, blocks
from ducho_fast.core.clear_text import clear_text
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.image import IMAGENET_MEAN, IMAGENET_STD
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Item, Listing
from ducho_fast.engine.autotune import AutoPick, planned_choice
from ducho_fast.engine.sinks import get_sink, sinks_for
from ducho_fast.engine.sources import list_images, list_interaction_texts, list_texts, read_table
from ducho_fast.engine.state import STATE_HOME
from ducho_fast.models.spec import ModelRef
from ducho_fast.plan import (
    ExtractPlan,
    FusionInput,
    FusionTask,
    ModelTask,
    PassTask,
    output_tag,
)
from ducho_fast.runtime.table import RuntimeChoice

FAST_DIR = "ducho-fast"


def model_folder(name: str, modality: str) -> str:
    """Ducho's model folder. Visual: the last part of the name without its extension
    (`ResNet50`, `MMFashion.pt` -> `MMFashion`); textual and visual_textual: the name as given,
    so a hub id nests (`sentence-transformers/all-mpnet-base-v2`). A local path in those
    modalities contributes its last part (Ducho would join the whole path)."""
    path = Path(name)
    if modality == "visual":
        return Path(path.name).stem  # Ducho's splitext(basename(name))[0]
    if path.is_absolute() or name.startswith((".", "~")) or path.exists():
        return path.name
    return name


def model_ref(entry: ModelEntry, kind: str, modality: str) -> ModelRef:
    task = "image" if kind == "image" else "text"
    if entry.backend == "torch":
        return torch_model_ref(entry, task)
    layers = tuple(layer for layer in entry.layers if not layer.isdigit())
    family = "hf_text" if modality == "textual" and entry.backend == "transformers" else "auto"
    # Ducho's visual_textual saves `CLIPModel.forward`'s embeddings, which have unit length.
    unit = modality == "visual_textual"
    return ModelRef(entry.model_name, task=task, layers=layers, family=family, l2_normalize=unit)  # type: ignore[arg-type]


def torch_model_ref(entry: ModelEntry, task: str) -> ModelRef:
    """Ducho's torch path: `reshape` is PIL's (width, height), bicubic; without `preprocessing`
    only ToTensor's rescale to [0, 1]; zscore with ImageNet or the given mean/std; minmax."""
    width, height = entry.reshape if entry.reshape else (224, 224)
    if entry.preprocessing == "zscore":
        mean = tuple(entry.mean) if entry.mean else IMAGENET_MEAN
        std = tuple(entry.std) if entry.std else IMAGENET_STD
    else:  # rescale only (Ducho's default) or per-image minmax: no mean/std step
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return ModelRef(
        entry.model_name,
        task=task,  # type: ignore[arg-type]
        layers=entry.layers,
        image_size=(height, width),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        normalization=entry.preprocessing or "zscore",
        weights=entry.weights,
    )


def layer_dirs(entry: ModelEntry) -> dict[str, str]:
    """Ducho names a single-output model's folder after `output_layers` (e.g. `1`)."""
    if entry.backend != "torch" and len(entry.layers) == 1:
        return {"*": entry.layers[0]}
    return {}


class DuchoPlanner:
    """Builds passes for each modality block; validates inputs before anything runs."""

    def __init__(self, config: DuchoConfig, config_dir: Path):
        self.config = config
        dataset = Path(config.dataset_path).expanduser()
        self.dataset = dataset if dataset.is_absolute() else (config_dir / dataset)
        self.fast = self.dataset / FAST_DIR

    def choice(self, entry: ModelEntry) -> tuple[RuntimeChoice, AutoPick | None]:
        cache = Path(self.config.cache_dir).expanduser() if self.config.cache_dir else None
        return planned_choice(
            entry.runtime or self.config.runtime,
            entry.precision or self.config.precision,
            self.config.min_cosine,
            cache_dir=cache,
            ort_provider=self.config.ort_provider,
            threads=self.config.threads,
        )

    def model_task(self, entry: ModelEntry, kind: str, out_root: Path, where: str) -> ModelTask:
        modality = where.split("/", 1)[0]
        choice, auto = self.choice(entry)
        folder = model_folder(entry.model_name, modality) + output_tag(choice, auto)
        trees = {"ducho": out_root, "fast": self.fast / where}
        return ModelTask(
            ref=model_ref(entry, kind, modality),
            label=folder,
            choice=choice,
            auto=auto,
            layer_dirs=layer_dirs(entry),
            roots={
                sink: trees[get_sink(sink).layout] / entry.backend / folder
                for sink in sinks_for(self.config.output_format)
            },
            fp16_storage=self.config.fp16_storage,
        )

    def state_dir(self, out_root: Path, *parts: str) -> Path:
        """A pass's state, inside the output folder it describes (it goes where that goes)."""
        safe = "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)
        return out_root / STATE_HOME / safe

    def image_pass(self, name: str, folder: Path, out_root: Path, entries) -> PassTask:
        if not folder.is_dir():
            raise ConfigError(f"{name}: image folder {folder} does not exist")
        models = tuple(self.model_task(e, "image", out_root, name) for e in entries)
        return PassTask(
            name=name,
            kind="image",
            list_items=partial(list_images, folder, self.config.ducho_ids),
            models=models,
            state_dir=self.state_dir(out_root, name, *(m.label for m in models)),
            failures_path=out_root / "failures.tsv",
            batch_size=min((e.batch_size for e in entries if e.batch_size), default=None),
        )

    def text_passes(
        self, name: str, list_items: Callable[[], Listing], out_root: Path, entries
    ) -> list[PassTask]:
        passes = []
        for entry in entries:
            model = self.model_task(entry, "text", out_root, name)
            passes.append(
                PassTask(
                    name=name,
                    kind="text",
                    list_items=clean_listing(list_items, entry.clear_text),
                    models=(model,),
                    state_dir=self.state_dir(out_root, name, entry.backend, model.label),
                    failures_path=out_root / "failures.tsv",
                    batch_size=entry.batch_size,
                )
            )
        return passes

    def text_source(self, name: str, path: Path, block: SourceBlock, source: str):
        columns, _ = read_table(path, block.encoding)
        if source == "interactions":
            ids, texts = block.interaction_id_and_text_columns
            missing = [c for c in (*ids, *texts) if c not in columns]
            if missing:
                raise ConfigError(f"{name}: {path} has no column(s) {missing}; columns: {columns}")
            return partial(list_interaction_texts, path, ids, texts, block.encoding)
        assert block.item_column is not None
        wanted = [block.item_column, *block.text_columns]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise ConfigError(f"{name}: {path} has no column(s) {missing}; columns: {columns}")
        return partial(list_texts, path, block.item_column, block.text_columns, block.encoding)

    def passes_for(self, modality: str, source: str, block: SourceBlock):
        name = f"{modality}/{source}"
        if modality == "visual":
            assert isinstance(block.input_path, str) and isinstance(block.output_path, str)
            folder = self.dataset / block.input_path
            return [
                self.image_pass(name, folder, self.dataset / block.output_path, block.model)
            ], []
        if modality == "textual":
            assert isinstance(block.input_path, str) and isinstance(block.output_path, str)
            lister = self.text_source(name, self.dataset / block.input_path, block, source)
            return self.text_passes(name, lister, self.dataset / block.output_path, block.model), []
        assert isinstance(block.input_path, dict) and isinstance(block.output_path, dict)
        visual_out = self.dataset / block.output_path["visual"]
        textual_out = self.dataset / block.output_path["textual"]
        image_pass = self.image_pass(
            f"{name}/visual", self.dataset / block.input_path["visual"], visual_out, block.model
        )
        lister = self.text_source(name, self.dataset / block.input_path["textual"], block, source)
        text_passes = self.text_passes(f"{name}/textual", lister, textual_out, block.model)
        fusions = self.fusions(block, image_pass, text_passes)
        return [image_pass, *text_passes], fusions

    def fusions(self, block: SourceBlock, image_pass: PassTask, text_passes) -> list[FusionTask]:
        """Each model's image and text outputs fused by id, per method, into Ducho's
        `<visual_out>_<textual_out>_<method>/<backend>/<model>/<layer>` (and the fast tree)."""
        assert isinstance(block.output_path, dict)
        tasks = []
        for entry, image_model, text_pass in zip(
            block.model, image_pass.models, text_passes, strict=True
        ):
            text_model = text_pass.models[0]
            layer = entry.layers[0] if len(entry.layers) == 1 else ""
            image = FusionInput(
                image_pass.state_dir, f"{image_model.label}/{layer or 'image_embeds'}"
            )
            text = FusionInput(text_pass.state_dir, f"{text_model.label}/{layer or 'text_embeds'}")
            for method in entry.fusions:
                fused = f"{block.output_path['visual']}_{block.output_path['textual']}_{method}"
                trees = {"ducho": self.dataset / fused, "fast": self.fast / fused}
                tail = Path(entry.backend, image_model.label, layer or "fused")
                folders = {
                    sink: trees[get_sink(sink).layout] / tail
                    for sink in sinks_for(self.config.output_format)
                }
                normalize = self.config.normalize_before_fusion
                tasks.append(FusionTask(image, text, method, folders, normalize))
        return tasks


@dataclass(frozen=True)
class CleanedListing:
    """A listing with Ducho's `clear_text` applied to every text (picklable, unlike a
    closure, so a plan can travel to another process)."""

    list_items: Callable[[], Listing]

    def __call__(self) -> Listing:
        listing = self.list_items()
        items = tuple(Item(i.item_id, i.path, clear_text(i.text or "")) for i in listing.items)
        return Listing(items, listing.failures)


def clean_listing(list_items: Callable[[], Listing], clear: bool) -> Callable[[], Listing]:
    return CleanedListing(list_items) if clear else list_items


def build_plan(config: DuchoConfig, config_dir: Path, progress_workers: int | None = None):
    planner = DuchoPlanner(config, config_dir)
    passes, fusions = [], []
    for modality, source, block in blocks(config):
        new_passes, new_fusions = planner.passes_for(modality, source, block)
        passes += new_passes
        fusions += new_fusions
    options = PipelineOptions(
        workers=config.workers if progress_workers is None else progress_workers,
        shard_size=config.shard_size,
        item_timeout_s=config.item_timeout,
        jpeg_draft=config.jpeg_draft,
    )
    return ExtractPlan(tuple(passes), tuple(fusions), options, config.overwrite, config.strict)

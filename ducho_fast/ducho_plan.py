"""From a Ducho config to an extraction plan: Ducho's paths, our passes.

Paths follow Ducho's rule: a relative `dataset_path` or `model_name` is read from the current
folder (Ducho's demos run from its repository root). A `dataset_path` found only beside the
config (ducho-fast's earlier rule) is used with a notice; found in both places, it is refused.

Layout (as Ducho writes it): `<dataset_path>/<output_path>/<backend>/<model>/<layer>/<id>.npy`,
float32 (1, D) (audio with `pooling: none`: (1, T, D), in Ducho's layout only). Compact
output (features.npy, ids.txt, manifest.json per model and layer) goes to
`<dataset_path>/ducho-fast/<modality>/<source>/<backend>/<model>/<layer>/`, run state into the
output it describes (`<dataset_path>/<output_path>/.ducho-fast/state/`). Differences from
Ducho, where Ducho is wrong, are listed in the README.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ducho_fast.config import DuchoConfig, ModelEntry, SourceBlock, blocks
from ducho_fast.core.clear_text import clear_text
from ducho_fast.core.errors import ConfigError, DuchoFastError
from ducho_fast.core.image import IMAGENET_MEAN, IMAGENET_STD
from ducho_fast.core.notices import notice
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Item, Listing
from ducho_fast.engine.autotune import AutoPick, default_runtime, planned_choice
from ducho_fast.engine.executors import EngineOptions
from ducho_fast.engine.image_table import image_table_columns, list_image_rows
from ducho_fast.engine.parquet import input_location, is_parquet
from ducho_fast.engine.sinks import get_sink, sinks_for, takes_sequences
from ducho_fast.engine.sources import list_images, list_interaction_texts, list_texts, read_table
from ducho_fast.engine.state import STATE_HOME
from ducho_fast.models.spec import ModelRef, UnknownLayerError, ducho_image_spec
from ducho_fast.plan import (
    ExtractPlan,
    FusionInput,
    FusionTask,
    ModelTask,
    PassTask,
    output_tag,
)
from ducho_fast.resolve import check_model, is_artifact
from ducho_fast.runtime.table import RuntimeChoice

FAST_DIR = "ducho-fast"
KINDS = {
    "visual": ("image",),
    "textual": ("text",),
    "visual_textual": ("image", "text"),
    "audio": ("audio",),
}
PREPROCESSING_KEYS = ("reshape", "preprocessing", "mean", "std")


def dataset_folder(value: str, config_dir: Path) -> Path:
    """Ducho's rule: a relative `dataset_path` is read from the current folder. A folder found
    only beside the config (ducho-fast's earlier rule) is used with a notice; one found in
    both places is refused, naming both, as is one found in neither."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    here, beside = Path.cwd() / path, config_dir / path
    if here.resolve() == beside.resolve():
        return here
    found = [p for p in (here, beside) if p.is_dir()]
    if found == [here]:
        return here
    if found == [beside]:
        notice(
            f"dataset_path {value!r}: no such folder from the current folder ({Path.cwd()}), as "
            f"Ducho reads it; using {beside}, beside the config (ducho-fast's earlier rule)"
        )
        return beside
    places = f"{here} (from the current folder, as Ducho reads it) and {beside} (beside the config)"
    if not found:
        raise ConfigError(f"dataset_path {value!r} does not exist: looked at {places}")
    raise ConfigError(
        f"dataset_path {value!r} is ambiguous: both {places} exist; give an absolute path or "
        "run from the folder you mean"
    )


def model_folder(name: str, modality: str) -> str:
    """Ducho's model folder. Visual: the last part of the name without its extension
    (`ResNet50`, `MMFashion.pt` -> `MMFashion`); textual and visual_textual: the name as given,
    so a hub id nests (`sentence-transformers/all-mpnet-base-v2`), as does a local folder
    named like one. An absolute path, or one leaving the current folder, contributes its last
    part (Ducho would join the whole path, writing outside the output folder)."""
    path = Path(name)
    if modality == "visual":
        return Path(path.name).stem  # Ducho's splitext(basename(name))[0]
    normal = os.path.normpath(name)
    if path.is_absolute() or name.startswith("~") or normal.split(os.sep)[0] == "..":
        return path.name
    return normal


def model_ref(entry: ModelEntry, kind: str, modality: str, trust_pickle: bool = False) -> ModelRef:
    if kind == "audio":  # Ducho's integer output_layers index hidden_states: kept
        return ModelRef(entry.model_name, task="audio", layers=entry.layers, pooling=entry.pooling)
    task = "image" if kind == "image" else "text"
    if entry.backend == "torch":
        ref = torch_model_ref(entry, task)
        trusted = trust_pickle if entry.trust_pickle is None else entry.trust_pickle
        return ModelRef(**{**ref.__dict__, "trust_pickle": trusted})
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


def gpu_ids(value: str | int | list[int] | None) -> tuple[int, ...]:
    """Ducho's `gpu list` (`0`, `"0,1"`, `[0, 1]`; `-1`: the CPU) as device ids."""
    if value is None:
        return ()
    parts = value.replace(" ", "").split(",") if isinstance(value, str) else value
    parts = parts if isinstance(parts, list) else [parts]
    try:
        ids = tuple(int(part) for part in parts if str(part) != "")
    except ValueError:
        raise ConfigError(
            f"gpu list {value!r}: give device numbers, e.g. 0 or 0,1 (-1: CPU)"
        ) from None
    return tuple(i for i in ids if i >= 0)


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


GPU_RUNTIMES = ("onnxruntime", "tensorrt", "auto")


def runtimes(config: DuchoConfig) -> set[str]:
    return {
        e.runtime or config.runtime or default_runtime(e.precision or config.precision)
        for _, _, block in blocks(config)
        for e in block.model
    }


def gpu_provider(config: DuchoConfig) -> str:
    """The ONNX Runtime provider for Ducho's `gpu list`: the CUDA provider on the listed GPUs
    (as Ducho, through CUDA_VISIBLE_DEVICES) where ONNX Runtime has one; otherwise the CPU,
    said in one line (Ducho falls back to the CPU the same way). An explicit `ort_provider`
    (key or flag) wins."""
    ids = gpu_ids(config.gpu_list)
    if not ids or "ort_provider" in config.model_fields_set:
        return config.ort_provider
    devices = ",".join(map(str, ids))
    providers = available_providers()
    if "CUDAExecutionProvider" in providers:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
        on_cpu = sorted({r for r in runtimes(config) if r not in GPU_RUNTIMES})
        if on_cpu:
            notice(
                f"gpu list {devices}: runtime {', '.join(on_cpu)} runs on the CPU in ducho-fast; "
                "runtime onnxruntime (CUDA provider) or tensorrt runs on the GPU"
            )
        return "cuda"
    notice(
        f"gpu list {devices}: no GPU provider in ONNX Runtime here ({', '.join(providers)}); "
        "the run uses the CPU, as Ducho falls back (onnxruntime-gpu and a GPU run it there)"
    )
    return config.ort_provider


class DuchoPlanner:
    """Builds passes for each modality block; validates inputs before anything runs."""

    def __init__(self, config: DuchoConfig, config_dir: Path):
        self.config = config
        self.dataset = dataset_folder(config.dataset_path, config_dir)
        self.fast = self.dataset / FAST_DIR
        self.ort_provider = gpu_provider(config)

    def choice(self, entry: ModelEntry) -> tuple[RuntimeChoice, AutoPick | None]:
        cache = Path(self.config.cache_dir).expanduser() if self.config.cache_dir else None
        precision = entry.precision or self.config.precision
        return planned_choice(
            entry.runtime or self.config.runtime or default_runtime(precision),
            precision,
            self.config.min_cosine,
            cache_dir=cache,
            ort_provider=self.ort_provider,
            threads=self.config.threads,
        )

    def ref(self, entry: ModelEntry, kind: str, modality: str) -> ModelRef:
        return model_ref(entry, kind, modality, self.config.trust_pickle)

    def model_task(self, entry: ModelEntry, kind: str, out_root: Path, where: str) -> ModelTask:
        modality = where.split("/", 1)[0]
        choice, auto = self.choice(entry)
        folder = model_folder(entry.model_name, modality) + output_tag(choice, auto)
        trees = {"ducho": out_root, "fast": self.fast / where}
        return ModelTask(
            ref=self.ref(entry, kind, modality),
            label=folder,
            choice=choice,
            auto=auto,
            layer_dirs=layer_dirs(entry),
            roots={
                sink: trees[get_sink(sink).layout] / entry.backend / folder
                for sink in self.sinks(entry, where)
            },
            fp16_storage=self.config.fp16_storage,
        )

    def sinks(self, entry: ModelEntry, where: str) -> tuple[str, ...]:
        """The run's output formats for one model; `pooling: none` under Ducho's default
        format (`both`, not given) writes Ducho's layout alone, said in one line (a format
        given in the config that cannot hold sequences was refused in config.py)."""
        names = sinks_for(self.config.output_format)
        if entry.pooling != "none":
            return names
        kept = tuple(name for name in names if takes_sequences(get_sink(name)))
        if kept != names:
            notice(
                f"{where} {entry.model_name}: pooling none writes Ducho's (1, T, D) files only; "
                f"{', '.join(n for n in names if n not in kept)} hold(s) one row per item"
            )
        return kept

    def state_dir(self, out_root: Path, *parts: str) -> Path:
        """A pass's state, inside the output folder it describes (it goes where that goes)."""
        safe = "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)
        return out_root / STATE_HOME / safe

    def image_pass(
        self,
        name: str,
        folder: Path | str,
        out_root: Path,
        entries,
        kind: str = "image",
        block: SourceBlock | None = None,
    ) -> PassTask:
        """A folder of files (images, or audio clips), or a Parquet table of encoded images,
        decoded once for every model."""
        models = tuple(self.model_task(e, kind, out_root, name) for e in entries)
        return PassTask(
            name=name,
            kind=kind,
            list_items=self.file_source(name, folder, kind, block),
            models=models,
            state_dir=self.state_dir(out_root, name, *(m.label for m in models)),
            failures_path=out_root / "failures.tsv",
            batch_size=min((e.batch_size for e in entries if e.batch_size), default=None),
        )

    def file_source(
        self, name: str, where: Path | str, kind: str, block: SourceBlock | None
    ) -> Callable[[], Listing]:
        """The lister of a folder of files, or (images) of a Parquet table's rows, whose
        columns are checked now (before any model opens)."""
        if kind == "image" and is_parquet(where) and block is not None:
            ids, images = image_table_columns(str(where), block.item_column, block.image_column)
            return partial(list_image_rows, where, ids, images)  # a Path names it in messages
        if isinstance(where, str):
            raise ConfigError(
                f"{name}: {where}: only Parquet tables are read from URLs, not folders of files"
            )
        if not where.is_dir():
            raise ConfigError(f"{name}: {kind} folder {where} does not exist")
        return partial(list_images, where, self.config.ducho_ids)

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

    def text_source(self, name: str, path: Path | str, block: SourceBlock, source: str):
        columns, _ = read_table(path, block.encoding)
        where = name.replace("/", ".")
        if source == "interactions":
            ids, texts = block.interaction_id_and_text_columns
            ids = ids or default_columns(where, "interaction_columns", path, columns[:2], columns)
            texts = texts or last_other_column(where, path, ids, columns)
            check_columns(where, path, [*ids, *texts], columns)
            return partial(list_interaction_texts, path, ids, texts, block.encoding)
        item = (
            block.item_column
            or default_columns(where, "item_column", path, columns[:1], columns)[0]
        )
        texts = block.text_columns or last_other_column(where, path, (item,), columns)
        check_columns(where, path, [item, *texts], columns)
        return partial(list_texts, path, item, texts, block.encoding)

    def passes_for(self, modality: str, source: str, block: SourceBlock):
        name = f"{modality}/{source}"
        outputs = (
            block.output_path if isinstance(block.output_path, dict) else {"": block.output_path}
        )
        for side, output in outputs.items():
            key = f"{modality}.{source}.output_path" + (f".{side}" if side else "")
            check_writable(key, self.dataset / output)
        if modality == "visual":
            assert isinstance(block.input_path, str) and isinstance(block.output_path, str)
            folder = input_location(self.dataset, block.input_path)
            out = self.dataset / block.output_path
            return [self.image_pass(name, folder, out, block.model, block=block)], []
        if modality == "audio":
            assert isinstance(block.input_path, str) and isinstance(block.output_path, str)
            folder, out = self.dataset / block.input_path, self.dataset / block.output_path
            return [self.image_pass(name, folder, out, block.model, kind="audio")], []
        if modality == "textual":
            assert isinstance(block.input_path, str) and isinstance(block.output_path, str)
            lister = self.text_source(
                name, input_location(self.dataset, block.input_path), block, source
            )
            return self.text_passes(name, lister, self.dataset / block.output_path, block.model), []
        assert isinstance(block.input_path, dict) and isinstance(block.output_path, dict)
        visual_out = self.dataset / block.output_path["visual"]
        textual_out = self.dataset / block.output_path["textual"]
        images = input_location(self.dataset, block.input_path["visual"])
        image_pass = self.image_pass(f"{name}/visual", images, visual_out, block.model, block=block)
        texts = input_location(self.dataset, block.input_path["textual"])
        lister = self.text_source(name, texts, block, source)
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


def default_columns(
    where: str, key: str, path: Path | str, picked: Sequence[str], columns: Sequence[str]
) -> tuple[str, ...]:
    """Ducho's rule before `item_column` / `text_column` were required: ids from the first
    column(s), texts from the last other one; said in one line, refused when none is left."""
    if len(columns) < len(picked) + 1:
        raise ConfigError(f"{where}: give {key}; {path} has only the columns {list(columns)}")
    notice(f"{where}: no {key}; using {list(picked)} of {path} (columns: {list(columns)})")
    return tuple(picked)


def last_other_column(
    where: str, path: Path | str, ids: Sequence[str], columns: Sequence[str]
) -> tuple[str, ...]:
    others = [column for column in columns if column not in ids]
    if not others:
        raise ConfigError(f"{where}: give text_column; {path} has only the columns {list(columns)}")
    return default_columns(where, "text_column", path, others[-1:], columns)


def check_columns(
    where: str, path: Path | str, wanted: Sequence[str], columns: Sequence[str]
) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ConfigError(f"{where}: {path} has no column(s) {missing}; columns: {list(columns)}")


def check_writable(key: str, folder: Path) -> None:
    """An output folder that can be created and written, checked before any work."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}: cannot create {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot write into {existing} (permission denied)")


def check_models(planner: DuchoPlanner) -> None:
    """Every model of every block opens, as far as can be told without loading weights (see
    `resolve.check_model`), so a bad model in the last block fails before the first block runs,
    naming the block and the key."""
    for modality, source, block in blocks(planner.config):
        for index, entry in enumerate(block.model):
            where = f"{modality}.{source}.model[{index}]"
            try:
                check_preprocessing_keys(entry, modality)
                for kind in KINDS[modality]:
                    check_model(planner.ref(entry, kind, modality), kind, planner.choice(entry)[0])
            except UnknownLayerError as exc:
                raise ConfigError(f"{where}.output_layers: {exc}") from None
            except DuchoFastError as exc:
                raise ConfigError(f"{where}.model_name {entry.model_name!r}: {exc}") from None


def check_preprocessing_keys(entry: ModelEntry, modality: str) -> None:
    """The YAML's `reshape` / `preprocessing` / `mean` / `std` are applied or refused, never
    dropped: for an exported artifact they must agree with the preprocessing it was exported
    with; the transformers backends take the model's own processor (Ducho warns the same)."""
    given = [key for key in PREPROCESSING_KEYS if key in entry.model_fields_set]
    if not given:
        return
    if entry.backend != "torch":
        if modality != "textual":
            notice(
                f"{entry.model_name}: {given} not applied: the {entry.backend} backend uses the "
                "model's own image processor (Ducho warns the same)"
            )
        return
    if not is_artifact(entry.model_name):
        return
    from ducho_fast.artifact.manifest import read_manifest

    graph = read_manifest(Path(entry.model_name), verify_hashes=False).graph("image")
    wanted = ducho_image_spec(torch_model_ref(entry, "image")).to_dict()
    keys = ("resize_mode", "resize", "interpolation", "crop", "mean", "std", "normalization")
    have = graph.preprocess or {}
    differs = [key for key in keys if have.get(key) != wanted[key]]
    if differs:
        raise ConfigError(
            f"it is an exported artifact whose preprocessing differs from the config's {given} "
            f"in {differs} (artifact: {[have.get(k) for k in differs]}, config: "
            f"{[wanted[k] for k in differs]}); the config's would be dropped. Point model_name "
            "at the model itself (a pickle with trust_pickle: true, or a torchvision name) so "
            f"it is exported with the config's preprocessing, or remove {given}"
        )


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


def checked_plan(config: DuchoConfig, config_dir: Path) -> ExtractPlan:
    """The plan of a config, checked whole before anything runs: inputs, columns and output
    folders (`build_plan`), then every block's models (`check_models`)."""
    planner = DuchoPlanner(config, config_dir)
    plan = plan_from(planner)
    if not plan.passes:
        raise ConfigError(
            "the config has no visual, textual, audio or visual_textual block with items or "
            "interactions: nothing to extract"
        )
    check_models(planner)
    return plan


def build_plan(config: DuchoConfig, config_dir: Path, progress_workers: int | None = None):
    """The plan of a config, its inputs and output folders checked (models are not opened)."""
    return plan_from(DuchoPlanner(config, config_dir), progress_workers)


def plan_from(planner: DuchoPlanner, progress_workers: int | None = None) -> ExtractPlan:
    config = planner.config
    check_writable("dataset_path", planner.fast)
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
        draft_min_cosine=config.min_cosine,
    )
    executor, engine = engine_of(planner)
    return ExtractPlan(
        tuple(passes), tuple(fusions), options, config.overwrite, config.strict, executor, engine
    )


def engine_of(planner: DuchoPlanner) -> tuple[str, EngineOptions]:
    """`engine: ray` runs passes on Ray; several GPUs in `gpu list`, on a machine that runs
    them (a GPU provider), get one worker process each; otherwise this process runs them."""
    config = planner.config
    gpus = gpu_ids(config.gpu_list)
    engine = EngineOptions(config.ray_address, config.ray_workers, gpus)
    if config.engine == "ray":
        return "ray", engine
    if len(gpus) > 1 and planner.ort_provider != "cpu":
        return "gpus", engine
    return "local", engine

"""Ducho 2.0 YAML, accepted as it is, validated up front into frozen objects.

Keys Ducho does not read are ignored, as Ducho ignores them, each with a one-line notice (and
the known key it resembles); wrong types say what was expected. Our own keys (documented in
the README) sit beside Ducho's at the top level and on each model, and each has a
command-line flag that overrides the file.
"""

from __future__ import annotations

import codecs
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.notices import notice
from ducho_fast.engine.sinks import get_sink, sinks_for, takes_sequences
from ducho_fast.runtime.table import all_precisions, runtime_names


def known_runtime(name: str | None) -> str | None:
    """A runtime of the runtime table (the CLI, the bench and this file read the same table)."""
    if name is not None and name not in (*runtime_names(), "auto"):
        raise ValueError(f"unknown runtime {name!r}; use auto or one of {list(runtime_names())}")
    return name


def known_precision(name: str | None) -> str | None:
    if name is not None and name not in (*all_precisions(), "auto"):
        raise ValueError(f"unknown precision {name!r}; use auto or one of {list(all_precisions())}")
    return name


def known_output_format(name: str) -> str:
    sinks_for(name)  # raises with the known formats
    return name


def known_encoding(name: str) -> str:
    """A text encoding Python knows (`utf-8`, `latin-1`, `cp1252`, ...)."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}; use e.g. utf-8, latin-1 or cp1252") from None
    return name


RuntimeName = Annotated[str, AfterValidator(known_runtime)]
PrecisionName = Annotated[str, AfterValidator(known_precision)]
OutputFormat = Annotated[str, AfterValidator(known_output_format)]
MODALITIES = ("visual", "textual", "audio", "visual_textual")
SOURCES = ("items", "interactions")


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ModelEntry(Strict):
    """One entry of a source's `model` list (Ducho's keys, then ours)."""

    model_name: str
    backend: Literal["torch", "transformers", "sentence_transformers", "tensorflow"] = "torch"
    output_layers: str | int | list[str | int] | None = None
    batch_size: int | None = Field(default=None, ge=1)  # None: a timed sweep picks it
    reshape: list[int] | None = None
    preprocessing: Literal["zscore", "minmax"] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    clear_text: bool = False
    tokenizer_name: str | None = None
    image_processor: str | None = None
    image_processor_name: str | None = None
    fusion: str | list[str] | None = None
    task: str | None = None
    # ducho-fast
    pooling: Literal["mean", "none"] = "mean"  # audio: mean over valid frames, or Ducho's (1, T, D)
    runtime: RuntimeName | None = None
    precision: PrecisionName | None = None
    weights: str = "DEFAULT"
    trust_pickle: bool | None = None  # None: the top-level key

    @field_validator("reshape")
    @classmethod
    def _two_sizes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) != 2 or min(value) < 1):
            raise ValueError("reshape must be [width, height] with positive sizes")
        return value

    @model_validator(mode="after")
    def _own_tokenizer_and_processor(self) -> ModelEntry:
        for key in ("tokenizer_name", "image_processor", "image_processor_name"):
            value = getattr(self, key)
            if value is not None and value != self.model_name:
                raise ValueError(
                    f"{key} {value!r} differs from model_name: ducho-fast uses the tokenizer "
                    "and image processor saved with the model (its export validates them "
                    "together); save them into one folder and give that as model_name"
                )
        return self

    @model_validator(mode="after")
    def _mean_std_with_zscore(self) -> ModelEntry:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give mean and std together")
        if self.mean is not None and self.preprocessing != "zscore":
            raise ValueError("mean and std apply only with preprocessing: zscore (as in Ducho)")
        return self

    @property
    def layers(self) -> tuple[str, ...]:
        if self.output_layers is None:
            return ()
        values = (
            self.output_layers if isinstance(self.output_layers, list) else [self.output_layers]
        )
        return tuple(str(v) for v in values)

    @property
    def fusions(self) -> tuple[str, ...]:
        if self.fusion is None:
            return ()
        return tuple(self.fusion) if isinstance(self.fusion, list) else (self.fusion,)


class SourceBlock(Strict):
    """`items:` or `interactions:` of a modality."""

    input_path: str | dict[str, str]
    output_path: str | dict[str, str]
    item_column: str | None = None
    image_column: str | None = None  # ducho-fast: a Parquet table of encoded images
    text_column: str | list[str] | None = None
    interaction_columns: list[str] | None = None
    encoding: Annotated[str, AfterValidator(known_encoding)] = "utf-8"  # ducho-fast: text files
    model: list[ModelEntry]

    @property
    def text_columns(self) -> tuple[str, ...]:
        if self.text_column is None:
            return ()
        return (
            tuple(self.text_column) if isinstance(self.text_column, list) else (self.text_column,)
        )

    @property
    def interaction_id_and_text_columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Ducho's form: `interaction_columns: [user, item]` plus `text_column`; a third entry
        in `interaction_columns` (older ducho-fast configs) is taken as the text column."""
        columns = tuple(self.interaction_columns or ())
        if len(columns) == 3 and not self.text_columns:
            return columns[:2], columns[2:]
        return columns, self.text_columns


class ModalityBlock(Strict):
    items: SourceBlock | None = None
    interactions: SourceBlock | None = None


class DuchoConfig(Strict):
    """A whole Ducho config file plus ducho-fast's run options."""

    dataset_path: str
    gpu_list: str | int | list[int] | None = Field(default=None, alias="gpu list")
    visual: ModalityBlock | None = None
    textual: ModalityBlock | None = None
    audio: ModalityBlock | None = None
    visual_textual: ModalityBlock | None = None
    # ducho-fast
    runtime: RuntimeName | None = None  # none given: autotune.default_runtime(precision)
    precision: PrecisionName = "fp32"
    workers: int = Field(default=2, ge=0)
    output_format: OutputFormat = "both"
    overwrite: bool = False
    strict: bool = False
    ducho_ids: bool = False
    fp16_storage: bool = False
    normalize_before_fusion: bool = False
    shard_size: int = Field(default=1024, ge=1)
    item_timeout: float = Field(default=60.0, gt=0)
    jpeg_draft: bool = False
    ort_provider: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    threads: int = Field(default=0, ge=0)  # inference intra-op threads; 0: every core
    min_cosine: float = Field(default=0.99, gt=0, le=1)  # fidelity floor of runtime/precision auto
    cache_dir: str | None = None
    trust_pickle: bool = False  # load pickled torch modules (runs their code): opt in
    engine: Literal["local", "ray"] = "local"  # ray: passes run on Ray Data (engine/executors)
    ray_address: str | None = None  # None: a local Ray for the run; auto or ray://host:port
    ray_workers: int | None = Field(default=None, ge=1)  # inference actors (None: per GPU/core)


def normalize_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """Ducho reads `gpu list` (with a space); accept `gpu_list` too."""
    data = dict(raw)
    if "gpu_list" in data and "gpu list" not in data:
        data["gpu list"] = data.pop("gpu_list")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Ducho-style dotted overrides: `textual.items.input_path=x.tsv` (values parsed as YAML)."""
    for override in overrides:
        key, sep, value = override.removeprefix("--").partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} must look like --section.key=value")
        node: Any = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = override_child(node, part, override)
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {override!r}: no list entry {last}")
            node[int(last)] = yaml.safe_load(value)
        else:
            node[last] = yaml.safe_load(value)
    return data


def override_child(node: Any, part: str, override: str) -> Any:
    """Step into a mapping key (created if absent) or a list index."""
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ConfigError(f"override {override!r}: no list entry {part}")
        return node[int(part)]
    if not isinstance(node, dict):
        raise ConfigError(f"override {override!r}: {part!r} is not a section")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def describe_error(error: dict, model: type[BaseModel]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        known = known_keys(model, error["loc"][:-1])
        return f"unknown key {where!r}; known keys here: {known}"
    if error["type"] == "missing":
        return f"missing required key {where!r}"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def known_keys(model: type[BaseModel], path: Sequence[Any]) -> list[str]:
    """The keys accepted at `path` in the config tree (for error messages)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            field = next((f for f in current.model_fields.values() if f.alias == part), None)
        if field is None:
            return []
        current = inner_model(field.annotation)
    if not hasattr(current, "model_fields"):
        return []
    return sorted(f.alias or name for name, f in current.model_fields.items())


def inner_model(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] annotations."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = inner_model(arg)
        if found is not None:
            return found
    return None


# Keys of Ducho's own config files that Ducho 2.0 no longer reads, and Ducho 1's names.
DUCHO_LEGACY_KEYS = {"model map": "Ducho's legacy model map, which Ducho 2.0 does not read"}
DUCHO_1_NAMES = {
    "input_folder": "input_path",
    "output_folder": "output_path",
    "name": "model_name",
    "framework": "backend",
}


def drop_unknown_keys(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the keys neither Ducho nor ducho-fast reads, each named in a notice with
    the known key it resembles (`resize` -> `reshape`): Ducho ignores such keys, so a Ducho
    config carrying them runs; the notice catches a typo that would otherwise change nothing."""
    return prune(data, DuchoConfig, ())


def prune(node: Any, model: Any, path: tuple[str, ...]) -> Any:
    if isinstance(node, list) and path and path[-1] == "model":
        return [prune(entry, model, (*path[:-1], f"model[{i}]")) for i, entry in enumerate(node)]
    if not isinstance(node, dict) or not hasattr(model, "model_fields"):
        return node
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    known = [*fields, *(("gpu_list",) if model is DuchoConfig else ())]
    kept = {}
    for key, value in node.items():
        if key in known:
            field = fields.get(key)
            inner = inner_model(field.annotation) if field is not None else None
            kept[key] = prune(value, inner, (*path, str(key))) if inner is not None else value
        else:
            ignored_key_notice(".".join((*path, str(key))), str(key), known)
    return kept


def ignored_key_notice(where: str, key: str, known: Sequence[str]) -> None:
    why = DUCHO_LEGACY_KEYS.get(key, "neither Ducho nor ducho-fast reads it")
    renamed = DUCHO_1_NAMES.get(key)
    close = [renamed] if renamed in known else difflib.get_close_matches(key, known, 1, 0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    hint += " (Ducho 1's name for it)" if renamed in known else ""
    notice(f"config: key {where!r} ignored ({why}){hint}")


def parse_config(data: dict[str, Any]) -> DuchoConfig:
    try:
        config = DuchoConfig.model_validate(drop_unknown_keys(normalize_keys(data)))
    except ValidationError as exc:
        problems = [describe_error(e, DuchoConfig) for e in exc.errors()]
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from None
    check_semantics(config)
    return config


def revalidate(config: DuchoConfig, updates: dict[str, Any]) -> DuchoConfig:
    """`config` with some top-level keys replaced, validated as if the file said so."""
    if not updates:
        return config
    data = config.model_dump(by_alias=True, exclude_unset=True)
    return parse_config({**data, **updates})


def load_config(path: Path, overrides: Sequence[str] = ()) -> DuchoConfig:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys")
    return parse_config(apply_overrides(data, overrides))


def check_semantics(config: DuchoConfig) -> None:
    """What types cannot say: unsupported backends and modalities, missing columns."""
    if config.audio is not None:
        check_audio(config.audio, config)
    for modality, source, block in blocks(config):
        where = f"{modality}.{source}"
        for index, entry in enumerate(block.model):
            if "pooling" in entry.model_fields_set and modality != "audio":
                raise ConfigError(f"{where}.model[{index}].pooling applies to audio models only")
            if entry.backend == "tensorflow":
                raise ConfigError(
                    f"{where}.model[{index}]: the tensorflow backend is not supported; "
                    "use torch, transformers or sentence_transformers"
                )
        if source == "interactions" and modality == "textual":
            ids, _ = block.interaction_id_and_text_columns
            if ids and len(ids) != 2:
                raise ConfigError(f"{where}.interaction_columns must be [user, item]; got {ids}")
        if modality == "visual_textual":
            for key in ("input_path", "output_path"):
                value = getattr(block, key)
                if not isinstance(value, dict) or set(value) != {"visual", "textual"}:
                    raise ConfigError(f"{where}.{key} must map visual and textual paths")


# Ducho's torchaudio bundles and the transformers checkpoints with the same weights.
TORCHAUDIO_CHECKPOINTS = {
    "WAV2VEC2_BASE": "facebook/wav2vec2-base",
    "WAV2VEC2_LARGE": "facebook/wav2vec2-large",
    "WAV2VEC2_LARGE_LV60K": "facebook/wav2vec2-large-lv60",
    "WAV2VEC2_XLSR53": "facebook/wav2vec2-large-xlsr-53",
    "WAV2VEC2_ASR_BASE_960H": "facebook/wav2vec2-base-960h",
    "WAV2VEC2_ASR_LARGE_960H": "facebook/wav2vec2-large-960h",
    "WAV2VEC2_ASR_LARGE_LV60K_960H": "facebook/wav2vec2-large-960h-lv60-self",
    "HUBERT_BASE": "facebook/hubert-base-ls960",
    "HUBERT_LARGE": "facebook/hubert-large-ll60k",
    "HUBERT_XLARGE": "facebook/hubert-xlarge-ll60k",
    "HUBERT_ASR_LARGE": "facebook/hubert-large-ls960-ft",
    "WAVLM_BASE": "microsoft/wavlm-base",
    "WAVLM_BASE_PLUS": "microsoft/wavlm-base-plus",
    "WAVLM_LARGE": "microsoft/wavlm-large",
}


def torchaudio_advice(model_name: str) -> str:
    """What to use instead of a torchaudio pipeline (which needs torchaudio)."""
    bundle = model_name.rsplit(".", 1)[-1].upper()
    checkpoint = TORCHAUDIO_CHECKPOINTS.get(bundle)
    instead = (
        f"use backend: transformers with model_name: {checkpoint} (the same weights)"
        if checkpoint
        else "use backend: transformers with a Wav2Vec2, HuBERT, WavLM or Data2VecAudio "
        "checkpoint (hub id or local folder)"
    )
    return (
        f"{model_name!r} is a torchaudio pipeline; torchaudio has no release for the torch "
        f"ducho-fast pins, so the torch backend cannot run audio: {instead}"
    )


def check_audio(block: ModalityBlock, config: DuchoConfig) -> None:
    """Audio reads a folder of clips (`items`) through transformers encoders."""
    if block.interactions is not None:
        raise ConfigError("audio.interactions: audio has items only (a folder of clips)")
    if block.items is None:
        return
    for key in ("input_path", "output_path"):
        if not isinstance(getattr(block.items, key), str):
            raise ConfigError(f"audio.items.{key} must be a folder path")
    for index, entry in enumerate(block.items.model):
        where = f"audio.items.model[{index}]"
        if entry.backend == "torch":
            raise ConfigError(f"{where}: {torchaudio_advice(entry.model_name)}")
        if entry.backend != "transformers":
            raise ConfigError(f"{where}: audio runs the transformers backend")
        if entry.pooling == "none":
            check_sequence_outputs(where, entry, config)


def check_sequence_outputs(where: str, entry: ModelEntry, config: DuchoConfig) -> None:
    """`pooling: none` gives a (1, T, D) sequence per clip, T varying: Ducho's layout holds
    it; formats and fusions of one row per item cannot. Ducho's default `output_format`
    (not given) writes Ducho's layout alone for such a model (ducho_plan)."""
    if entry.fusions:
        raise ConfigError(
            f"{where}.fusion: fusion joins one row per item, and pooling: none gives a "
            "(1, T, D) sequence per clip; use pooling: mean to fuse"
        )
    if "output_format" not in config.model_fields_set:
        return
    rows_only = [s for s in sinks_for(config.output_format) if not takes_sequences(get_sink(s))]
    if rows_only:
        raise ConfigError(
            f"{where}.pooling: none writes a (1, T, D) sequence per clip, which output_format "
            f"{config.output_format} ({', '.join(rows_only)}: one row per item) cannot hold; "
            "use output_format: ducho (Ducho's layout), or pooling: mean for compact/parquet"
        )


def blocks(config: DuchoConfig) -> list[tuple[str, str, SourceBlock]]:
    found = []
    for modality in MODALITIES:
        block = getattr(config, modality)
        if block is None:
            continue
        for source in SOURCES:
            value = getattr(block, source)
            if value is not None:
                found.append((modality, source, value))
    return found

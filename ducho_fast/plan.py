"""What a run does, as frozen, picklable data: passes of models over sources, then fusions.

Built by `ducho_plan` (a Ducho YAML) or `api` (one model, no config), run by `runner`. A pass
is one source through one or more models of one modality (images decode once for every model
of the pass); each model's outputs go to the folders of the run's sinks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Listing
from ducho_fast.engine.autotune import AutoPick
from ducho_fast.engine.executors import EngineOptions
from ducho_fast.engine.sinks import LayerOutput
from ducho_fast.models.spec import ModelRef
from ducho_fast.runtime.table import RuntimeChoice


def output_tag(choice: RuntimeChoice, auto: AutoPick | None = None) -> str:
    """The suffix of a model's output folders (Ducho's and compact) and pass state, so the
    outputs of one model at two precisions live side by side: none for fp32 (every runtime
    gives the same values within the export's gate: Ducho's folder name), else
    `-<precision>-<runtime>` (reduced precisions differ by runtime); `auto` where measured."""
    precision = choice.precision if auto is None else (auto.precision or "auto")
    runtime = choice.runtime if auto is None else (auto.runtime or "auto")
    if precision == "fp32":
        return ""
    return "-auto" if precision == runtime == "auto" else f"-{precision}-{runtime}"


@dataclass(frozen=True)
class ModelTask:
    """One model of a pass and where each of its outputs goes."""

    ref: ModelRef
    label: str
    choice: RuntimeChoice
    layer_dirs: Mapping[str, str]  # graph output name (or "*") -> layer folder name
    roots: Mapping[str, Path]  # sink name -> <root>/<backend>/<model folder>
    fp16_storage: bool = False
    auto: AutoPick | None = None  # runtime and/or precision left to measurement

    def output(
        self,
        graph_output: str,
        item_shape: tuple[int, ...] | None = None,
        sequence: bool = False,
    ) -> LayerOutput:
        """Where `graph_output` goes: `<root>/<layer>` for each sink; `item_shape`: Ducho's
        per-item shape of a feature map (None: a vector); `sequence`: a `(T, D)` per item."""
        layer = self.layer_dirs.get(graph_output) or self.layer_dirs.get("*") or graph_output
        folders = {sink: root / layer for sink, root in self.roots.items()}
        name = f"{self.label}/{layer}"
        return LayerOutput(name, folders, self.fp16_storage, item_shape, sequence)


@dataclass(frozen=True)
class PassTask:
    name: str
    kind: str  # a modality name (modalities.MODALITIES)
    list_items: Callable[[], Listing]  # picklable: a module-level function or a partial of one
    models: tuple[ModelTask, ...]
    state_dir: Path
    failures_path: Path
    batch_size: int | None = None  # None: chosen by a timed sweep (engine/batch_sweep.py)


@dataclass(frozen=True)
class FusionInput:
    """One output of an earlier pass, read from that pass's committed state."""

    state_dir: Path
    output: str  # LayerOutput.name, e.g. "clip/image_embeds"


@dataclass(frozen=True)
class FusionTask:
    """Fuse outputs `a` and `b` by id; the result goes to each sink's folder."""

    a: FusionInput
    b: FusionInput
    method: str
    folders: Mapping[str, Path]  # sink name -> folder
    normalize: bool = False


@dataclass(frozen=True)
class ExtractPlan:
    passes: tuple[PassTask, ...]
    fusions: tuple[FusionTask, ...] = ()
    options: PipelineOptions = field(default_factory=PipelineOptions)
    overwrite: bool = False
    strict: bool = False
    executor: str = "local"  # engine/executors: where each pass's batches run
    engine: EngineOptions = field(default_factory=EngineOptions)  # its settings (Ray, GPUs)

    def __post_init__(self) -> None:
        check_outputs(self)


def check_outputs(plan: ExtractPlan) -> None:
    """Refuse a plan in which two outputs would write into one folder (`/a/clip` and
    `/b/clip` both give the folder `clip`): the second would silently replace the first.
    A model's output folders are `<root>/<layer>`, its layers known only once it is open, so
    two models sharing a root collide unless they are of different modalities (an image and
    a text tower write different outputs) with no layer folder forced to the same name."""
    owners: dict[tuple[Path, str], tuple[int, str]] = {}
    for task in plan.passes:
        for model in task.models:
            layer = model.layer_dirs.get("*") or f"<{task.kind} outputs>"
            what = f"{task.name} model {model.ref.source!r}"
            for root in model.roots.values():
                claim(owners, (root, layer), (id(model), what))
    for fusion in plan.fusions:
        what = f"the {fusion.method} fusion of {fusion.a.output} and {fusion.b.output}"
        for folder in fusion.folders.values():
            claim(owners, (folder.parent, folder.name), (id(fusion), what))


def claim(
    owners: dict[tuple[Path, str], tuple[int, str]], key: tuple[Path, str], who: tuple[int, str]
) -> None:
    other = owners.setdefault(key, who)
    if other[0] != who[0]:
        folder = key[0] if key[1].startswith("<") else key[0] / key[1]
        raise ConfigError(
            f"{other[1]} and {who[1]} would write into the same folder {folder}; give them "
            "different model names or output paths"
        )

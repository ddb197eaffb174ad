"""torchvision architectures by name, and pickled torch modules (behind --trust-pickle).

Layers are named as Ducho names them (`avgpool`, `classifier.3`) and several come out of one
graph. Preprocessing follows Ducho's torch path: exact bicubic resize, ImageNet mean/std.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ducho_fast.core.errors import ModelLoadError
from ducho_fast.models.registry import fingerprint_path, register_family
from ducho_fast.models.spec import LoadedModel, ModelRef, Tower, UnknownLayerError, ducho_image_spec
from ducho_fast.models.towers import ImageTower

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle")


def torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


class NamedLayers:
    """Runs an FX feature extractor (traced once, at load) and returns the layers in order."""

    def __init__(self, layers: tuple[str, ...]):
        self.layers = layers

    def __call__(self, body: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = body(pixel_values)
        return tuple(out[layer] for layer in self.layers)


def whole_output(body: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor]:
    return (body(pixel_values),)


def check_layers(model: nn.Module, layers: tuple[str, ...]) -> None:
    """Every layer is a node of the model's graph (as Ducho names them, `layer4.1.conv3`);
    otherwise say which, with the nearest node names and the last ones (the usual picks)."""
    import difflib

    from torchvision.models.feature_extraction import get_graph_node_names

    nodes = get_graph_node_names(model.eval())[1]
    for layer in layers:
        if layer not in nodes:
            close = difflib.get_close_matches(layer, nodes, n=3, cutoff=0.6)
            hint = f"did you mean {close}? " if close else ""
            raise UnknownLayerError(
                f"unknown layer {layer!r} for {type(model).__name__}; {hint}its last nodes "
                f"are {nodes[-6:]}"
            )


def layer_extractor(model: nn.Module, layers: tuple[str, ...]) -> nn.Module:
    from torchvision.models.feature_extraction import create_feature_extractor

    check_layers(model, layers)
    return create_feature_extractor(model, return_nodes={layer: layer for layer in layers})


def check_torchvision_layers(source: str, layers: tuple[str, ...]) -> None:
    """The layers of a torchvision architecture, checked on a weightless (meta) copy: a
    fraction of a second, no download."""
    import torchvision

    if not layers:
        return
    with torch.device("meta"):
        model = torchvision.models.get_model(torchvision_name(source), weights=None)
    check_layers(model, layers)


def image_model(ref: ModelRef, model: nn.Module, family: str, fingerprint: str) -> LoadedModel:
    if ref.task == "text":
        raise ModelLoadError(f"{ref.source} is an image model; it has no text tower")
    spec = ducho_image_spec(ref)
    layers = ref.layers or (("avgpool",) if hasattr(model, "avgpool") else ())
    if layers:
        module = ImageTower(spec, layer_extractor(model, layers), NamedLayers(layers))
    else:  # no layer named and no pooled layer to default to: the module's own output
        module, layers = ImageTower(spec, model, whole_output), ("output",)
    tower = Tower("image", module, layers, preprocess=spec, squeeze_outputs=True)
    return LoadedModel(ref.source, family, (tower,), fingerprint)


def torchvision_name(source: str) -> str | None:
    """The torchvision name for `source`, case-insensitively (Ducho writes `ResNet50`)."""
    names = {name.lower(): name for name in torchvision_names()}
    return names.get(source.lower())


def seeded_random_model(name: str) -> nn.Module:
    """Random weights that are the same in every process, so runtimes can be compared."""
    import torchvision

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torchvision.models.get_model(name, weights=None)


def _is_torchvision(ref: ModelRef, path: Path | None) -> bool:
    return path is None and torchvision_name(ref.source) is not None


@register_family("torchvision", _is_torchvision, "torchvision architecture by name")
def load_torchvision(ref: ModelRef, path: Path | None) -> LoadedModel:
    import torchvision

    name = torchvision_name(ref.source)
    weights = ref.weights
    if weights.lower() == "none":
        model = seeded_random_model(name)
        fingerprint = f"torchvision:{name}:random-seed0"
    elif Path(weights).is_file():
        model = torchvision.models.get_model(name, weights=None)
        load_state_dict(model, name, Path(weights))
        fingerprint = fingerprint_path(Path(weights))
    else:
        try:
            model = torchvision.models.get_model(name, weights=weights)
        except Exception as exc:
            raise ModelLoadError(
                f"could not load torchvision weights {weights!r} for {ref.source} "
                f"({type(exc).__name__}: {exc}); offline, pass --weights none or a state dict"
            ) from exc
        fingerprint = f"torchvision:{name}:{weights}"
    return image_model(ref, model.eval(), "torchvision", fingerprint)


def load_state_dict(model: nn.Module, name: str, path: Path) -> None:
    """Weights from a state-dict file, or one line saying how they do not fit `name`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{path} is not a plain state dict ({type(exc).__name__}); save it with "
            f"torch.save(model.state_dict(), path) from a torchvision {name}"
        ) from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} holds a {type(state).__name__}, not a state dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        k
        for k in expected
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        raise ModelLoadError(
            f"{path} does not fit torchvision {name}: {few(missing)} missing, "
            f"{few(unexpected)} unexpected, {few(shapes)} of another shape; give a state dict "
            f"saved from {name} (or the architecture it was saved from as the model name)"
        )
    model.load_state_dict(state)


def few(keys: list[str], shown: int = 3) -> str:
    """`2 keys (a, b)`: a count and the first few, for one-line messages."""
    if not keys:
        return "no keys"
    more = ", ..." if len(keys) > shown else ""
    return f"{len(keys)} key(s) ({', '.join(keys[:shown])}{more})"


def unpickle(path: Path) -> object:
    """Load a pickled module; a class its pickle names that cannot be imported is one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError, ImportError) as exc:
        raise ModelLoadError(
            f"{path} could not be unpickled: {exc} (a pickle names the module of its class); "
            "run from the folder that holds that module, or add it to PYTHONPATH"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"{path} could not be loaded as a pickled module ({type(exc).__name__}: {exc})"
        ) from exc


def _is_pickle(ref: ModelRef, path: Path | None) -> bool:
    return path is not None and path.is_file() and path.suffix in PICKLE_SUFFIXES


def untrusted_pickle(path: Path) -> ModelLoadError:
    return ModelLoadError(
        f"{path} is a pickle: loading it runs arbitrary code. Pass --trust-pickle "
        "(`trust_pickle: true` in a config, trust_pickle=True in Python) only for files you trust."
    )


def unpickle_module(path: Path) -> nn.Module:
    model = unpickle(path)
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module")
    return model


@register_family("torch_pickle", _is_pickle, "pickled torch.nn.Module (needs --trust-pickle)")
def load_pickle(ref: ModelRef, path: Path | None) -> LoadedModel:
    assert path is not None
    if not ref.trust_pickle:
        raise untrusted_pickle(path)
    model = unpickle_module(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return image_model(ref, model.eval(), "torch_pickle", digest)

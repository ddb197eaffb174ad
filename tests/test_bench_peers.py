"""`bench --peers`: peers measured beside ducho-fast on the same data, ratios at equal fidelity."""

from __future__ import annotations

import numpy as np
import pytest

from ducho_fast.bench import BenchConfig, run_bench
from ducho_fast.bench.peer_run import add_peer_ratios
from ducho_fast.core.errors import ConfigError

PEER_OF_RUN = ("st-torch", "torch-script", "torch-script-text")


@pytest.fixture(scope="module")
def peers_run(tiny_st, tiny_clip, five_photos_module, tmp_path_factory) -> tuple[dict, dict]:
    root = tmp_path_factory.mktemp("peers")
    texts = root / "texts.tsv"
    rows = [f"item{i}\t{'a longer description ' * (i % 5)}red shirt {i}" for i in range(12)]
    texts.write_text("id\ttext\n" + "\n".join(rows) + "\n")
    common = {
        "output_dir": root / "results",
        "runtimes": ("onnxruntime",),
        "precisions": ("fp32",),
        "batch_sizes": (4,),
        "repeats": 1,
        "baseline": False,
        "catalogue": 30,
    }
    text = run_bench(
        BenchConfig(str(tiny_st), texts=texts, peers=("st-torch",), label="st", **common),
        log=lambda _: None,
    )
    clip = run_bench(
        BenchConfig(
            str(tiny_clip),
            images=five_photos_module,
            texts=texts,
            peers=("torch-script", "torch-script-text"),
            label="clip",
            **common,
        ),
        log=lambda _: None,
    )
    return text["kinds"]["text"], clip["kinds"]["image"], clip["kinds"]["text"]


@pytest.fixture(scope="module")
def five_photos_module(tmp_path_factory, skimage_photos):
    folder = tmp_path_factory.mktemp("photos")
    for photo in skimage_photos[:5]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    return folder


def test_peers_get_the_same_inputs_and_match_eager(peers_run):
    """Same model, fp32 both sides: a peer's rows equal eager fp32, so the comparison is of
    speed, not of different work (the CLIP scripts use the model's own processor and
    tokenizer; a peer of the other modality is not run)."""
    for data, peer in zip(peers_run, PEER_OF_RUN, strict=True):
        contenders = data["peers"]["contenders"]
        assert set(contenders) == {"ducho-fast onnxruntime:fp32", peer}
        assert contenders[peer]["min_cosine"] > 0.9999
        ours = contenders["ducho-fast onnxruntime:fp32"]
        assert ours["fastest_peer"] == peer
        assert ours["ratio_to_fastest_peer"] == pytest.approx(
            ours[data["peers"]["level"]] / contenders[peer][data["peers"]["level"]]
        )


def test_peer_end_to_end_runs_on_the_tiled_catalogue(peers_run):
    for data, peer in zip(peers_run, PEER_OF_RUN, strict=True):
        e2e = data["end_to_end"]
        assert e2e[f"peer {peer}"]["items"] == 30 == e2e["onnxruntime:fp32"]["items"]
        assert e2e[f"peer {peer}"]["cosine_to_fp32"]["items"] == 30
        assert e2e[f"peer {peer}"]["cosine_to_fp32"]["min_cosine"] > 0.9999
        assert e2e["onnxruntime:fp32"]["fastest_peer"] == f"peer {peer}"


def figures(arithmetic: str = "fp32", **classes: tuple[float, float]) -> dict[str, dict]:
    return {
        name: {
            "min_cosine": cos,
            "class": cls,
            "in_memory_items_per_s": rate,
            "arithmetic": arithmetic,
        }
        for name, (cos, rate) in classes.items()
        for cls in ["exact" if cos >= 0.9999 else "gated" if cos >= 0.99 else "below gate"]
    }


def test_fp32_is_also_measured_against_peers_computing_in_fp32():
    """A bf16 peer at cosine 0.99998 is in the exact class; fp32 variants get a second ratio
    against the fastest peer that really computes in fp32."""
    table = figures(ours_fp32=(1.0, 200.0)) | figures("bf16", ours_bf16=(0.99995, 350.0))
    table |= figures("bf16", ov_default=(0.99998, 300.0)) | figures(ov_f32=(1.0, 160.0))
    add_peer_ratios(table, ["ov_default", "ov_f32"], "text")
    assert table["ours_fp32"]["fastest_peer"] == "ov_default"
    assert table["ours_fp32"]["fastest_fp32_peer"] == "ov_f32"
    assert table["ours_fp32"]["ratio_to_fastest_fp32_peer"] == pytest.approx(1.25)
    assert "fastest_fp32_peer" not in table["ours_bf16"]


def test_openvino_peer_reports_the_precision_it_really_runs(tiny_st, tmp_path):
    """sentence-transformers' OpenVINO backend computes in bf16 by default wherever the CPU
    has native bf16; the report must say so instead of calling it fp32."""
    ov = pytest.importorskip("openvino")
    pytest.importorskip("optimum.intel", reason="pip install 'ducho-fast[peers]'")
    from ducho_fast.bench.peers import PEERS

    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    default = PEERS.lookup("st-openvino").open(str(tiny_st), 4, tmp_path)
    assert default.arithmetic == ("bf16" if native else "fp32")
    assert PEERS.lookup("st-openvino-fp32").open(str(tiny_st), 4, tmp_path).arithmetic == "fp32"


def test_ratios_only_against_peers_at_least_as_faithful():
    table = figures(ours_fp32=(1.0, 100.0), ours_int8=(0.995, 300.0), fast=(0.98, 900.0))
    table |= figures(exact=(0.99999, 200.0), gated=(0.993, 250.0))
    add_peer_ratios(table, ["fast", "exact", "gated"], "text")
    assert table["ours_fp32"]["fastest_peer"] == "exact"  # not the faster, lossier ones
    assert table["ours_fp32"]["ratio_to_fastest_peer"] == pytest.approx(0.5)
    assert table["ours_int8"]["fastest_peer"] == "gated"  # the 0.98 peer is below the gate
    assert table["ours_int8"]["ratio_to_fastest_peer"] == pytest.approx(1.2)


def test_unknown_peer_is_refused_before_measuring(tiny_st, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown peer 'st-magic'.*st-torch"):
        BenchConfig(
            str(tiny_st), output_dir=tmp_path, texts=tmp_path / "t.tsv", peers=("st-magic",)
        )


def test_peer_rows_keep_input_order(tiny_st):
    """st-torch sorts by length inside encode(); rows must come back in input order."""
    from ducho_fast.bench.peers import PEERS

    model = PEERS.lookup("st-torch").open(str(tiny_st), 2, tiny_st)
    texts = ["short", "a much longer text than the others here", "mid length text"]
    together = model.infer(model.prepare(texts))
    alone = np.concatenate([model.infer(model.prepare([t])) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)

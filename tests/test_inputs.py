"""No input is lost, altered or overwritten silently: tables, ids, image folders, output
folders and export targets (issue 9, "silent loss"). Every case is made of real files."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

import ducho_fast
from ducho_fast import ExportConfig, ModelRef
from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.artifact.manifest import read_manifest
from ducho_fast.cli import main
from ducho_fast.config import load_config
from ducho_fast.core.errors import ConfigError
from ducho_fast.ducho_plan import build_plan
from ducho_fast.engine.sources import list_images, list_interaction_texts, list_texts
from ducho_fast.engine.state import read_failures

QUIET = RunOptions(progress=False, shard_size=32, item_timeout=10)


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def texts_of(path: Path, **kwargs):
    listing = list_texts(path, "id", ("text",), **kwargs)
    return {i.item_id: i.text for i in listing.items}, listing.failures


# ---- tables -------------------------------------------------------------------------------


def test_an_unclosed_quote_loses_only_its_own_row_and_says_which(tmp_path):
    rows = [f"{n}\tsoft top number {n}\n" for n in range(1, 8)]
    rows[1] = '2\t"Best top ever, said my wife\n'  # a quote that never closes on its line
    rows[4] = '5\t12" vinyl sleeve"\n'  # pandas would close row 2's field here, 3 rows on
    path = write(tmp_path / "items.tsv", "id\ttext\n" + "".join(rows))
    texts, failures = texts_of(path)
    assert sorted(texts) == ["1", "3", "4", "5", "6", "7"]
    assert texts["5"] == '12" vinyl sleeve"'  # a quote inside a field is a character
    (failure,) = failures
    assert failure.path == f"{path}:3" and failure.item_id == "2"
    assert "quote" in failure.error


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_a_quote_that_never_closes_is_recorded(tmp_path, suffix):
    sep = "\t" if suffix == ".tsv" else ","
    body = f'id{sep}text\na{sep}first\nb{sep}"never closed\nc{sep}last\n'
    texts, failures = texts_of(write(tmp_path / f"items{suffix}", body))
    assert texts == {"a": "first", "c": "last"}
    assert [(f.item_id, f.path.rsplit(":", 1)[1]) for f in failures] == [("b", "3")]


def test_quoted_fields_read_as_pandas_reads_them_for_ducho(tmp_path):
    body = 'id\ttext\n1\t"a ""quoted"" word"\n2\t"two\nlines"\n3\t"tab\tinside"\n'
    texts, failures = texts_of(write(tmp_path / "items.tsv", body))
    assert texts == {"1": 'a "quoted" word', "2": "two\nlines", "3": "tab\tinside"}
    assert failures == ()


def test_a_row_with_more_or_fewer_fields_is_recorded_not_cut(tmp_path):
    body = "id\ttext\n1\tfine\n2\tcut here\tlost tail\n3\n4\talso fine\n"
    texts, failures = texts_of(write(tmp_path / "items.tsv", body))
    assert texts == {"1": "fine", "4": "also fine"}
    by_line = {f.path.rsplit(":", 1)[1]: f.error for f in failures}
    assert set(by_line) == {"3", "4"}
    assert "3 field(s) where the header has 2" in by_line["3"]


def test_a_byte_order_mark_does_not_hide_the_first_column(tmp_path):
    path = write(tmp_path / "items.tsv", "\ufeffid\ttext\nx1\tjersey top\n")
    assert texts_of(path)[0] == {"x1": "jersey top"}


def test_latin1_is_a_clear_error_naming_the_byte_and_an_option_reads_it(tmp_path):
    path = write(tmp_path / "items.tsv", "id\ttext\nx1\tplain\nx2\tcafé crème\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"items.tsv:3: byte 0xe9 at position 23") as info:
        texts_of(path)
    assert "encoding" in str(info.value)
    assert texts_of(path, encoding="latin-1")[0] == {"x1": "plain", "x2": "café crème"}


def test_the_encoding_key_reaches_the_plan_and_an_unknown_one_is_refused(tmp_path):
    write(tmp_path / "items.tsv", "id\ttext\nx1\tcafé\n".encode("cp1252"))
    block = {"input_path": "items.tsv", "output_path": "out", "item_column": "id"}
    block |= {"text_column": "text", "model": [{"model_name": "m", "backend": "transformers"}]}
    config = {"dataset_path": str(tmp_path), "textual": {"items": {**block, "encoding": "cp1252"}}}
    path = write(tmp_path / "c.yml", yaml.safe_dump(config))
    (task,) = build_plan(load_config(path), tmp_path).passes
    assert [i.text for i in task.list_items().items] == ["café"]
    with pytest.raises(ConfigError, match="unknown encoding 'klingon'"):
        load_config(path, ["--textual.items.encoding=klingon"])
    with pytest.raises(ConfigError, match=r"items\.tsv:2: byte 0xe9"):
        build_plan(load_config(path, ["--textual.items.encoding=utf-8"]), tmp_path)


def test_the_cli_names_the_byte_without_a_traceback(tmp_path):
    path = write(tmp_path / "items.tsv", "id\ttext\nx1\tcafé\n".encode("latin-1"))
    args = ["extract", "--model", "m", "--texts", str(path), "--output", str(tmp_path / "o")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "items.tsv:2: byte 0xe9" in result.output and "Traceback" not in result.output


# ---- ids ----------------------------------------------------------------------------------


def test_ids_are_kept_as_written(tmp_path):
    body = "id\ttext\nx \tspace after\n x\tspace before\nx\tnone\n \tonly a space\n"
    texts, failures = texts_of(write(tmp_path / "items.tsv", body))
    assert texts == {"x ": "space after", " x": "space before", "x": "none"}
    assert [(f.item_id, f.error) for f in failures] == [(" ", "empty id")]
    users = write(tmp_path / "reviews.tsv", "user\titem\ttext\nu1 \ti1\tgood\n\ti2\tbad\n")
    listing = list_interaction_texts(users, ("user", "item"), ("text",))
    assert [i.item_id for i in listing.items] == ["u1 __i1"]
    assert [f.path.rsplit(":", 1)[1] for f in listing.failures] == ["3"]  # no user: recorded


def test_an_id_with_a_trailing_space_gets_its_own_ducho_file(tiny_st, tmp_path):
    path = write(tmp_path / "items.tsv", "id\ttext\nx\tjersey top\nx \tslim trousers\n")
    job = SingleModelJob(str(tiny_st), tmp_path / "out", texts=path, batch_size=2)
    extract_single(job, RunOptions(progress=False, output_format="both", runtime="torch"))
    folder = tmp_path / "out" / "ducho" / tiny_st.name / "sentence_embedding"
    assert sorted(p.name for p in folder.iterdir()) == ["x .npy", "x.npy"]
    assert not np.allclose(np.load(folder / "x .npy"), np.load(folder / "x.npy"))


# ---- image folders --------------------------------------------------------------------------


@pytest.fixture
def odd_folder(tmp_path, skimage_photos) -> Path:
    """One real photo in every container Pillow reads beyond the usual ten suffixes, plus
    what an image folder holds besides images."""
    folder = tmp_path / "images"
    folder.mkdir()
    photo = Image.open(skimage_photos[0]).convert("RGB").resize((64, 48))
    for name in ("photo.tga", "photo-pcx.pcx", "photo-ppm.ppm", "photo-sgi.sgi", "icon.ico"):
        photo.save(folder / name)
    photo.save(folder / "no-extension", format="PNG")
    photo.save(folder / "twin.jpg")
    photo.save(folder / "twin.png")  # same id as twin.jpg
    (folder / "notes.txt").write_text("not an image\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "more").mkdir()
    photo.save(folder / "more" / "nested.jpg")
    return folder


def test_every_folder_entry_is_an_item_or_a_recorded_skip(odd_folder):
    listing = list_images(odd_folder)
    items = [i.item_id for i in listing.items]
    assert items == [
        "icon",
        "no-extension",
        "notes",
        "photo-pcx",
        "photo-ppm",
        "photo-sgi",
        "photo",
        "twin",
    ]
    recorded = {Path(f.path).name: f.stage for f in listing.failures}
    assert recorded == {
        ".DS_Store": "skipped",
        "Thumbs.db": "skipped",
        "more": "skipped",
        "twin.png": "id",
    }


def test_every_image_pillow_reads_gets_features_and_the_rest_is_recorded(tiny_clip, odd_folder):
    heif = importlib.util.find_spec("pillow_heif") is not None  # the `heif` extra
    if heif:  # written without registering its opener here: the run must register it
        import pillow_heif

        pillow_heif.from_pillow(Image.open(odd_folder / "photo.tga")).save(
            odd_folder / "iphone.heic", quality=90
        )
    out = odd_folder.parent / "out"
    extract_single(SingleModelJob(str(tiny_clip), out, images=odd_folder), QUIET)
    ids = (out / tiny_clip.name / "image_embeds" / "ids.txt").read_text().splitlines()
    expected = {"icon", "no-extension", "photo", "photo-pcx", "photo-ppm", "photo-sgi", "twin"}
    if heif:
        expected.add("iphone")
    assert set(ids) == expected
    failures = {Path(f.path).name: f for f in read_failures(out / "failures.tsv")}
    assert set(failures) == {".DS_Store", "Thumbs.db", "more", "notes.txt", "twin.png"}
    assert "cannot identify image file" in failures["notes.txt"].error
    assert failures["notes.txt"].stage == "decode"


# ---- output collisions ----------------------------------------------------------------------


def visual_config(tmp_path: Path, models: list[str], **more) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    block = {"input_path": "images", "output_path": "out", "model": []}
    block["model"] = [{"model_name": m, "backend": "transformers"} for m in models]
    config = {"dataset_path": str(tmp_path), "visual": {"items": block}, **more}
    return write(tmp_path / "c.yml", yaml.safe_dump(config))


def test_two_models_writing_one_folder_are_refused_before_any_work(tmp_path):
    path = visual_config(tmp_path, ["/a/clip", "/b/clip.pt"])
    with pytest.raises(ConfigError, match=r"'/a/clip' and .*'/b/clip\.pt'.* same folder") as info:
        build_plan(load_config(path), tmp_path)
    assert str(tmp_path / "out" / "transformers" / "clip") in str(info.value)
    assert not (tmp_path / "out").exists()
    build_plan(load_config(visual_config(tmp_path, ["/a/clip", "/b/vit"])), tmp_path)


def test_text_models_and_fusions_of_visual_textual_are_checked_too(tmp_path):
    (tmp_path / "images").mkdir()
    write(tmp_path / "items.tsv", "id\ttext\nx\ty\n")
    models = [{"model_name": m, "backend": "transformers", "fusion": "concat"} for m in ("/a/c",)]
    block = {
        "input_path": {"visual": "images", "textual": "items.tsv"},
        "output_path": {"visual": "shared", "textual": "shared"},  # image and text: one root
        "item_column": "id",
        "text_column": "text",
        "model": models,
    }
    config = {"dataset_path": str(tmp_path), "visual_textual": {"items": block}}
    path = write(tmp_path / "c.yml", yaml.safe_dump(config))
    build_plan(load_config(path), tmp_path)  # image_embeds and text_embeds do not collide
    block["model"] = [*models, {**models[0], "model_name": "/b/c"}]
    write(path, yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"'/a/c' and .*'/b/c'"):
        build_plan(load_config(path), tmp_path)


# ---- export targets -------------------------------------------------------------------------


def test_export_refuses_a_folder_that_is_not_an_artifact(tiny_st, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("months of work\n")
    config = ExportConfig(ModelRef(str(tiny_st)), target)
    with pytest.raises(ConfigError, match="not empty and holds no ducho-fast artifact"):
        ducho_fast.export(config)
    assert (target / "thesis.tex").read_text() == "months of work\n"
    file_target = write(tmp_path / "file", "x")
    with pytest.raises(ConfigError, match="is a file"):
        ducho_fast.export(ExportConfig(ModelRef(str(tiny_st)), file_target))


def test_replacing_an_artifact_deletes_only_the_artifacts_files(tiny_st, tmp_path):
    target = ducho_fast.export(ExportConfig(ModelRef(str(tiny_st)), tmp_path / "st"))
    write(target / "NOTES.md", "why I exported this\n")
    (target / "runs").mkdir()
    write(target / "runs" / "log.txt", "kept\n")
    stale = sorted(read_manifest(target).files)
    ducho_fast.export(ExportConfig(ModelRef(str(tiny_st)), target))
    assert (target / "NOTES.md").read_text() == "why I exported this\n"
    assert (target / "runs" / "log.txt").read_text() == "kept\n"
    assert sorted(read_manifest(target).files) == stale  # the new artifact is whole
    assert not list(tmp_path.glob(".st.*")), "no old or staging folder left behind"
    shutil.rmtree(target / "runs")
    assert ducho_fast.load(target) is not None

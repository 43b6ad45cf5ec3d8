"""Recipe datasets (pipeline.recipes, recipe_build, recipe_verify): a tiny recipe build compared field by
field with the tiny materialised build, resume, refusals, --verify naming a damaged asset file."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_COUNT, interrupt_recipe_statistics, read_manifest_json, tiny_options
from pipeline.codecs import default_codecs
from pipeline.errors import DepthmaskError
from pipeline.reader import DatasetReader
from pipeline.recipe_build import build_recipes, validate_recipe_options
from pipeline.recipe_verify import describe_recipes, verify_recipes
from pipeline.recipes import RecipeStore
from pipeline.stats import StatsAccumulator, summarise


def build_tiny_recipes(output: Path, **overrides) -> Path:
    summary = build_recipes(tiny_options(output, **overrides), progress=False, log=lambda m: None)
    assert summary.complete
    return Path(output)


@pytest.fixture(scope="module")
def tiny_recipes(tmp_path_factory) -> Path:
    return build_tiny_recipes(tmp_path_factory.mktemp("recipes") / "data")


def test_every_field_equals_the_materialised_sample(tiny_recipes, tiny_dataset):
    store, reader = RecipeStore.open(tiny_recipes), DatasetReader(tiny_dataset)
    jpeg = default_codecs().fg_bg
    assert len(store) == len(reader) == TINY_COUNT
    for i in range(TINY_COUNT):
        rebuilt, stored = store.render(i), reader.decode(i)
        for name in ("mask", "depth", "bg"):
            assert np.array_equal(rebuilt[name], stored[name]), (i, name)
        assert (rebuilt["x"], rebuilt["y"], rebuilt["flip"], rebuilt["bg_index"], rebuilt["fg_index"]) == \
            (stored["x"], stored["y"], stored["flip"], stored["bg_index"], stored["fg_index"])
        # fg_bg is the composite before JPEG: encoded as the build encodes it, it gives the stored bytes
        assert jpeg.encode(rebuilt["fg_bg"]) == reader.record(i)["fg_bg"], i


def test_statistics_are_exact_over_the_rebuilt_samples(tiny_recipes, tiny_manifest):
    manifest, store = read_manifest_json(tiny_recipes), RecipeStore.open(tiny_recipes)
    assert manifest["split"] == tiny_manifest["split"]
    assert manifest["backgrounds"]["sha256"] == tiny_manifest["backgrounds"]["sha256"]  # the same bg inputs
    for split in tiny_manifest["stats"]:
        for name in ("bg", "mask", "depth"):
            assert manifest["stats"][split][name] == tiny_manifest["stats"][split][name], (split, name)
    acc = StatsAccumulator()
    for i in range(len(store)):
        acc.add_image("all", "fg_bg", store.render(i)["fg_bg"])
    assert manifest["stats"]["all"]["fg_bg"] == summarise(acc.total())["fg_bg"]


def test_per_epoch_placements_redraw_training_samples_only(tiny_recipes):
    store = RecipeStore.open(tiny_recipes)
    index = np.arange(len(store))
    fixed, epoch1, again = store.placements(index), store.placements(index, epoch=1), store.placements(index, epoch=1)
    held_out = store.split_of(index) != 0
    for key in fixed:
        assert np.array_equal(epoch1[key], again[key])  # deterministic
        assert np.array_equal(epoch1[key][held_out], fixed[key][held_out])  # val never changes
    assert (epoch1["x"][~held_out] != fixed["x"][~held_out]).any()
    sample = store.render(int(index[~held_out][0]), epoch=1)
    assert sample["mask"].any() and sample["fg_bg"].shape == (192, 192, 3)


def test_resume_after_interruption_gives_the_same_dataset(tiny_recipes, tmp_path, monkeypatch):
    restore = interrupt_recipe_statistics(monkeypatch, at_chunk=3)
    with pytest.raises(KeyboardInterrupt):
        build_tiny_recipes(tmp_path / "r")
    assert not (tmp_path / "r" / "manifest.json").exists() and (tmp_path / "r" / "build.json").exists()
    with pytest.raises(DepthmaskError, match="interrupted build with other options"):
        build_tiny_recipes(tmp_path / "r", seed=1)
    restore()
    build_tiny_recipes(tmp_path / "r")
    resumed, whole = read_manifest_json(tmp_path / "r"), read_manifest_json(tiny_recipes)
    assert resumed == {**whole, "created_by": resumed["created_by"]}
    summary = build_recipes(tiny_options(tmp_path / "r"), progress=False, log=lambda m: None)
    assert summary.built_samples == 0 and "already complete" in summary.notes[0]
    with pytest.raises(DepthmaskError, match="--overwrite"):
        build_tiny_recipes(tmp_path / "r", seed=1)


def test_an_unknown_version_is_refused(tiny_recipes, tmp_path):
    from pipeline.format import read_manifest

    copy = Path(shutil.copytree(tiny_recipes, tmp_path / "copy"))
    with pytest.raises(DepthmaskError, match="version 2 is not supported"):  # a version-1 reader
        read_manifest(copy)
    manifest = read_manifest_json(copy)
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(DepthmaskError, match="recipe format version 3 is not supported"):
        RecipeStore.open(copy)


@pytest.mark.parametrize("name", ["foregrounds.lmdb", "background_pixels.lmdb", "backgrounds.lmdb"])
def test_verify_names_a_damaged_asset_file(tiny_recipes, tmp_path, name):
    copy = Path(shutil.copytree(tiny_recipes, tmp_path / "copy"))
    data = bytearray((copy / name).read_bytes())
    at = data.find(b"\xff\xda") if name == "backgrounds.lmdb" else data.find(b"IDAT")  # inside an image
    data[at + 40] ^= 0x40
    (copy / name).write_bytes(bytes(data))
    report = verify_recipes(copy)
    assert not report.ok and report.problems == [f"{name}: damaged asset store: content hash differs from the manifest"]
    with pytest.raises(DepthmaskError, match="differs from the|damaged asset"):
        store = RecipeStore.open(copy)
        store.backgrounds, store.foregrounds


def test_verify_and_describe_a_sound_recipe(tiny_recipes):
    report = verify_recipes(tiny_recipes)
    assert report.ok, report.problems
    assert report.records == TINY_COUNT
    info = describe_recipes(tiny_recipes)
    assert info["samples"] == TINY_COUNT and info["kind"] == "recipes"


def test_per_sample_model_depth_cannot_be_a_recipe(tmp_path):
    from pipeline.assets import UserInputs
    from pipeline.depth_model import DepthModelSpec

    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    inputs = UserInputs(depth_model=DepthModelSpec(path=model), depth_mode="per-sample")
    with pytest.raises(DepthmaskError, match="per-sample model depth .* no recipe can rebuild"):
        validate_recipe_options(tiny_options(tmp_path / "r", inputs=inputs))
    assert not (tmp_path / "r").exists()


# ---- issue 14 section 4: bad input and safety ---------------------------------------------------------------
def test_the_materialised_reader_refuses_a_recipe_folder_by_its_version(tiny_recipes):
    """What a reader of materialised datasets (any version-1 reader: this one's DatasetReader) says of a recipe."""
    with pytest.raises(DepthmaskError, match=r"manifest.json: format version 2 is not supported") as error:
        DatasetReader(tiny_recipes)
    assert "\n" not in str(error.value)


def _changed_foreground_store(root: Path) -> None:
    """foregrounds.lmdb rewritten as a sound LMDB file of the same keys, foreground 0 with one pixel changed."""
    from pipeline.format import pack_record, unpack_record
    from pipeline.recipe_codecs import FOREGROUND_CODEC
    from pipeline.recipes import FOREGROUND_RECORD
    from pipeline.shards import ShardWriter, close_readonly, iterate_records

    path = root / "foregrounds.lmdb"
    records = [unpack_record(value, FOREGROUND_RECORD) for _, value in iterate_records(path)]
    close_readonly(path)
    bgra = FOREGROUND_CODEC.decode(records[0]["image"])
    bgra[bgra.shape[0] // 2, bgra.shape[1] // 2, :3] ^= 0x10
    records[0]["image"] = FOREGROUND_CODEC.encode(bgra)
    path.unlink()
    with ShardWriter(path) as writer:
        for i, record in enumerate(records):
            writer.put(i, pack_record(record))


def test_a_changed_asset_is_detected_when_read_and_by_verify(tiny_recipes, tmp_path):
    from pipeline.format import encode_key
    from pipeline.shards import ShardHasher, close_readonly, iterate_records

    copy = Path(shutil.copytree(tiny_recipes, tmp_path / "copy"))
    _changed_foreground_store(copy)
    changed = r"foregrounds.lmdb: foreground 0 differs from the asset the dataset was built with"
    with pytest.raises(DepthmaskError, match=changed):
        RecipeStore.open(copy).foregrounds
    assert verify_recipes(copy).problems == ["foregrounds.lmdb: damaged asset store: content hash differs from the "
                                             "manifest"]
    # the file's hash and size in the manifest made to match it: the asset's own hash still tells
    hasher, path = ShardHasher(), copy / "foregrounds.lmdb"
    for index, value in iterate_records(path):
        hasher.update(encode_key(index), value)
    close_readonly(path)
    manifest = read_manifest_json(copy)
    manifest["files"]["foregrounds.lmdb"].update(sha256=hasher.hexdigest(), bytes=path.stat().st_size)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DepthmaskError, match=changed):
        RecipeStore.open(copy).foregrounds
    report = verify_recipes(copy)
    assert not report.ok and any(re.search(changed, p) for p in report.problems), report.problems

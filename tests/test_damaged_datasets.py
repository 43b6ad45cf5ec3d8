"""A damaged dataset is one clear line in every command that reads it, whatever the number of DataLoader
workers: truncated or missing files, crafted records of any msgpack shape, edited manifests, paths that
lead outside the dataset folder. The damages are tests/damage.py's; a new command joins COMMANDS.

All commands of all damages run once per module: dm-stats through run_cli (its own process, as a user runs
it), the training tools through test_train_cli's driver (one process imports torch once and forks a child
per case, each still its own process with its own exit code)."""
from __future__ import annotations

import json
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack
import numpy as np
import pytest

import damage
from conftest import TINY_MODEL_ARGS, assert_one_line_error, copy_dataset, run_cli
from test_train_cli import run_cases
from pipeline import DatasetReader, DepthmaskError
from pipeline.report import verify_dataset
from pipeline.stats import ChannelSums, summarise

# samples of the tiny dataset (see conftest): 36 train, 4 val (60..63, in shard 3). A crafted val record is
# read by dm-train's first validation (the baseline), before any training step: the case stays fast.
VAL_INDEX = 61
_WHERE = ["shard-00003.lmdb", f"key {VAL_INDEX}", "malformed record"]

# (id, damage(root), fragments every error line must hold, where: "manifest" (refused before anything is
# read), "file" (found when a file is opened) or "record" (found when the record is read; dm-stats without
# --verify reads no records))
DAMAGES = [
    ("truncated-shard", lambda r: damage.truncate_shard(r, 3), ["shard-00003.lmdb", "truncated"], "file"),
    ("truncated-backgrounds", damage.truncate_backgrounds, ["backgrounds.lmdb", "truncated"], "file"),
    ("missing-shard", lambda r: damage.delete_shard(r, 3), ["shard-00003.lmdb", "missing"], "file"),
    ("nested-array-field", lambda r: damage.craft_record(r, VAL_INDEX, {"fg_bg": damage.nested_arrays()}),
     [*_WHERE, "'fg_bg' holds an array"], "record"),
    ("ext-type-field", lambda r: damage.craft_record(r, VAL_INDEX, {"mask": msgpack.ExtType(42, b"\0" * 9)}),
     [*_WHERE, "extension type 42"], "record"),
    ("ext-type-timestamp", lambda r: damage.craft_record(r, VAL_INDEX, {"depth": msgpack.Timestamp(0)}),
     [*_WHERE, "extension type -1"], "record"),
    ("ext-type-record", lambda r: damage.craft_record(r, VAL_INDEX, msgpack.ExtType(127, b"\0" * 12)),
     [*_WHERE, "extension type 127"], "record"),
    ("missing-field", lambda r: damage.craft_record(r, VAL_INDEX, {"x": damage.DELETE}),
     [*_WHERE, "'x' is missing"], "record"),
    ("non-finite-number", lambda r: damage.craft_record(r, VAL_INDEX, {"y": math.inf}),
     [*_WHERE, "'y'", "expected an integer"], "record"),
    ("huge-index", lambda r: damage.craft_record(r, VAL_INDEX, {"bg": 2 ** 63}), [*_WHERE, "'bg'", "0..3"],
     "record"),
    ("wrong-type", lambda r: damage.craft_record(r, VAL_INDEX, {"flip": "yes"}), [*_WHERE, "'flip'"], "record"),
    ("not-a-map", lambda r: damage.craft_record(r, VAL_INDEX, "x" * 100_000), [*_WHERE, "msgpack map"], "record"),
    ("deeply-nested", lambda r: damage.craft_record(r, VAL_INDEX, damage.deeply_nested_bytes(), raw=True),
     [*_WHERE, "nested too deeply"], "record"),
    ("garbage-bytes", lambda r: damage.craft_record(r, VAL_INDEX, b"\xc1\xc1\xc1", raw=True),
     [*_WHERE, "not valid msgpack"], "record"),
    ("absolute-path", damage.absolute_shard_path, ["shards[0].path", "must be relative"], "manifest"),
    ("escaping-path", damage.escaping_shard_path, ["shards[0].path", "inside the dataset folder"], "manifest"),
    ("symlink-escape", damage.symlink_escape, ["shards[0].path", "symbolic link"], "manifest"),
    ("missing-key", lambda r: damage.edit_manifest(r, "sample_count", damage.DELETE),
     ["manifest.json", "key sample_count is missing"], "manifest"),
    ("mistyped-key", lambda r: damage.edit_manifest(r, "shards", "all of them"),
     ["manifest.json", "key shards", "expected a JSON list"], "manifest"),
    ("missing-nested-key", lambda r: damage.edit_manifest(r, "shards.2.bytes", damage.DELETE),
     ["key shards[2].bytes is missing"], "manifest"),
    ("nan-mean", lambda r: damage.edit_manifest(r, "stats.train.fg_bg.mean.0", math.nan),
     ["key stats.train.fg_bg.mean[0]", "finite"], "manifest"),
    ("edited-std", lambda r: damage.edit_manifest(r, "stats.train.fg_bg.std.1", 0.5),
     ["stats.train.fg_bg", "exact sums"], "manifest"),
    ("sample-count", lambda r: damage.edit_manifest(r, "sample_count", 65), ["sample_count", "65"], "manifest"),
    ("shard-range", lambda r: damage.edit_manifest(r, "shards.1.start", 15), ["shards[1]"], "manifest"),
]
TRAIN = [*TINY_MODEL_ARGS, "--schedule", "32:1", "--batch-size", "8", "--device", "cpu", "--no-progress",
         "--no-augment"]
# dm-train costs seconds per case (a model, a baseline pass): it gets damages of each way a reader meets one,
# with and without workers; every record damage goes through DataLoader workers in
# test_worker_errors_read_as_without_workers, and through the same reader in dm-export-samples.
_MANIFEST_SAMPLE = ("absolute-path", "symlink-escape", "missing-key", "nan-mean")  # one check, in read_manifest
# (id, tool, arguments after DATA ({out}: a fresh path), the damages it is tried on)
COMMANDS = [
    ("dm-stats", "dm-stats", [], [d[0] for d in DAMAGES if d[3] != "record"]),  # reads no records
    ("dm-stats-verify", "dm-stats", ["--verify", "--workers", "2"], [d[0] for d in DAMAGES]),
    ("dm-export-samples", "dm-export-samples", ["-o", "{out}.png", "--split", "all", "-n", "64", "--size", "32"],
     [d[0] for d in DAMAGES if d[3] != "manifest" or d[0] in _MANIFEST_SAMPLE]),
    ("dm-train-workers-0", "dm-train", ["-o", "{out}", *TRAIN, "--workers", "0"],
     ("truncated-shard", "nested-array-field", "absolute-path", "missing-key")),
    ("dm-train-workers-2", "dm-train", ["-o", "{out}", *TRAIN, "--workers", "2"],
     ("truncated-backgrounds", "missing-shard", "nested-array-field", "ext-type-field")),
]
CASES = [(d, c) for d in DAMAGES for c in COMMANDS if d[0] in c[3]]


@pytest.fixture(scope="module")
def damaged(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("damaged")
    roots = {}
    for name, make, _, _ in DAMAGES:
        roots[name] = copy_dataset(tiny_dataset, base / name / "data")
        make(roots[name])
    return roots


@pytest.fixture(scope="module")
def results(damaged, tmp_path_factory) -> dict[tuple[str, str], object]:
    """dm-stats through run_cli (its --verify starts worker processes of its own); the training tools through
    test_train_cli's driver, at the same time (two cores)."""
    base = tmp_path_factory.mktemp("runs")
    cases = [((name, command), tool, [str(damaged[name]), *(a.format(out=base / f"{name}-{command}") for a in args)])
             for (name, *_), (command, tool, args, _) in CASES]
    stats = [c for c in cases if c[1] == "dm-stats"]
    training = [c for c in cases if c[1] != "dm-stats"]
    with ThreadPoolExecutor(2) as pool:
        driver = pool.submit(run_cases, base / "driver", [(tool, argv) for _, tool, argv in training])
        with ThreadPoolExecutor(1) as stats_pool:
            out = dict(zip([c[0] for c in stats], stats_pool.map(lambda c: run_cli(c[1], *c[2]), stats)))
        out.update(zip([c[0] for c in training], driver.result()))
    return out


@pytest.mark.parametrize("damage_case, command", CASES, ids=[f"{d[0]}-{c[0]}" for d, c in CASES])
def test_damage_is_one_clear_line(results, damage_case, command):
    name, _, fragments, kind = damage_case
    result = results[(name, command[0])]
    if command[0] == "dm-stats-verify" and kind == "record":
        # --verify lists every problem (stdout), exit 1; each names the shard, the key and what is wrong
        assert result.rc == 1 and "Traceback" not in result.stdout + result.stderr, str(result)
        assert result.stderr == "" and "verify       FAILED" in result.stdout, str(result)
        problems = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
        matching = [p for p in problems if all(f.lower() in p.lower() for f in fragments)]
        assert matching, f"no problem line holds {fragments}: {problems}"
        return
    line = assert_one_line_error(result, *fragments) if command[1] != "dm-train" else \
        assert_error_after_training_log(result, *fragments)
    assert "Caught" not in line and "Original Traceback" not in line and "unexpected" not in line, line
    assert "--verify" not in line or command[0] != "dm-stats-verify", line  # no advice to run what just ran


def assert_error_after_training_log(result, *fragments: str) -> str:
    """dm-train logs what it trains before it reads data: the error is then the last line, the only one saying
    'error:', and nothing before it is a warning or a traceback."""
    assert result.rc != 0 and "Traceback" not in result.stdout + result.stderr, str(result)
    lines = result.stderr.strip("\n").splitlines()
    if len(lines) > 1:
        for line in lines[:-1]:
            assert not any(w in line.lower() for w in ("error", "warn", "caught", "file \"")), str(result)
        result = type(result)(result.rc, result.stdout, lines[-1])
    return assert_one_line_error(result, *fragments)


def test_every_damage_is_tried_by_every_command_that_reads_it():
    names = {d[0] for d in DAMAGES}
    for _, _, _, tried in COMMANDS:
        assert set(tried) <= names
    assert {kind for *_, kind in DAMAGES} == {"file", "record", "manifest"}
    trained = {name for command in COMMANDS if command[1] == "dm-train" for name in command[3]}
    assert {d[3] for d in DAMAGES if d[0] in trained} == {"file", "record", "manifest"}


def test_nothing_outside_the_folder_was_opened(damaged, results):
    """The copy outside the folder that an escaping path names would be read without a complaint (a valid
    shard): that the commands refused it is the error above; here, that it is still untouched (no lock file
    created next to it either)."""
    outside = damaged["escaping-path"].parent / "data-outside"
    assert sorted(p.name for p in outside.iterdir()) == ["stolen.lmdb"]


# ---- --verify: every problem of a shard, and every derived field of the manifest ----------------------
def test_verify_reports_every_problem_of_a_shard(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")

    def change(records):
        records[16] = msgpack.packb({**msgpack.unpackb(records[16]), "fg_bg": damage.nested_arrays()})
        records[17] = damage.deeply_nested_bytes()
        records[20] = msgpack.packb({**msgpack.unpackb(records[20]), "mask": msgpack.ExtType(7, b"")})

    damage.rewrite_shard(root, 1, change)
    report = verify_dataset(root, workers=2)
    shard = "shards/shard-00001.lmdb"
    assert f"{shard} key 16: malformed record: field 'fg_bg' holds an array, expected binary data" \
        in report.problems
    assert f"{shard} key 17: malformed record: not valid msgpack (StackError: nested too deeply)" \
        in report.problems
    assert any(p.startswith(f"{shard} key 20: malformed record:") and "extension type 7" in p for p in report.problems)
    assert f"{shard}: content hash differs from the manifest" in report.problems
    assert report.records == 64  # every record of the shard was still read
    assert not [p for p in report.problems if "shard-00001" not in p], report.problems


def _consistent_stats_edit(root: Path) -> str:
    """Sums edited and mean/std recomputed from them: the manifest agrees with itself, not with the data."""
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["stats"]["all"]["fg_bg"]
    sums = ChannelSums.from_json(entry["exact_sums_stored_order"])
    sums.sums[0] += 1000
    manifest["stats"]["all"]["fg_bg"] = summarise({"fg_bg": sums})["fg_bg"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    return "statistics of fg_bg (all) differ from the manifest"


def _renamed_shard(root: Path) -> str:
    (root / "shards" / "shard-00001.lmdb").rename(root / "shards" / "renamed.lmdb")
    damage.edit_manifest(root, "shards.1.path", "shards/renamed.lmdb")
    return "shards (paths and ranges)"


# damages a reader cannot see (the manifest agrees with itself) that --verify finds by recomputing the field
DERIVED = [
    ("split-counts", lambda r: damage.edit_manifest(r, "split.counts.train", 35), "split.counts"),
    ("split-list", lambda r: damage.edit_manifest(r, "split.val_backgrounds", [0]), "split.val_backgrounds"),
    ("far-m", lambda r: damage.edit_manifest(r, "depth.far_m", 30.0), "depth.far_m"),
    ("depth-kind", lambda r: damage.edit_manifest(r, "depth.kind", "relative"), "depth.kind"),
    ("sizes", lambda r: damage.edit_manifest(r, "sizes.fg_bg", 1), "sizes.fg_bg"),
    ("sizes-total", lambda r: damage.edit_manifest(r, "sizes.total_on_disk", 1), "sizes.total_on_disk"),
    ("image-size", lambda r: damage.edit_manifest(r, "image_size", [96, 96]), "image_size"),
    ("jpeg-quality", lambda r: damage.edit_manifest(r, "fields.fg_bg.quality", 50), "fields"),
    ("shard-sha256", lambda r: damage.edit_manifest(r, "shards.3.sha256", "0" * 64), "shard-00003.lmdb: content hash"),
    ("bg-sha256", lambda r: damage.edit_manifest(r, "backgrounds.sha256", "0" * 64), "backgrounds.lmdb: content hash"),
    ("plan-positions", lambda r: damage.edit_manifest(r, "plan.positions", 3), "plan.positions"),
    ("shard-path", _renamed_shard, "shards (paths and ranges)"),
    ("stats-with-sums", _consistent_stats_edit, "statistics of fg_bg (all) differ from the manifest"),
]


@pytest.mark.parametrize("make, fragment", [d[1:] for d in DERIVED], ids=[d[0] for d in DERIVED])
def test_verify_recomputes_derived_fields(tiny_dataset, tmp_path, make, fragment):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    try:
        make(root)
        report = verify_dataset(root, workers=2)
    except DepthmaskError as exc:  # refused before anything is read: also a finding
        assert fragment.split(".")[0].split(":")[0] in str(exc), str(exc)
        return
    assert not report.ok and any(fragment in p for p in report.problems), report.problems


def test_verify_cli_lists_a_derived_field(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    damage.edit_manifest(root, "depth.far_m", 30.0)
    result = run_cli("dm-stats", root, "--verify", "--workers", "2")
    assert result.rc == 1 and result.stderr == "", str(result)
    assert "manifest.json: depth.far_m is 30.0, but 60.0 follows from the build's options" in result.stdout


# ---- a dataset replaced or removed while a reader uses it -----------------------------------------------
def _other_dataset(tiny_dataset: Path, tmp_path: Path) -> Path:
    other = copy_dataset(tiny_dataset, tmp_path / "other")
    damage.edit_manifest(other, "created_by", "another build")
    return other


def test_reader_stops_when_its_dataset_is_replaced(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    reader = DatasetReader(root)
    reader.decode(0)  # shard 0 and the backgrounds are open
    damage.replace_dataset(root, _other_dataset(tiny_dataset, tmp_path))
    with pytest.raises(DepthmaskError, match="the dataset changed while it was being read"):
        reader.decode(63)  # shard 3 is opened now
    # a worker gets the reader pickled: it checks again when it opens its first file, even shard 0
    worker = pickle.loads(pickle.dumps(reader))
    with pytest.raises(DepthmaskError, match=str(root)):
        worker.decode(0)


def test_reader_stops_when_its_dataset_is_removed(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    reader = DatasetReader(root)
    (root / "manifest.json").unlink()
    with pytest.raises(DepthmaskError, match="replaced or removed"):
        reader.decode(0)


def test_a_byte_identical_manifest_is_the_same_dataset(tiny_dataset, tmp_path):
    """A restored copy (new inode, same bytes) names the same content: reading goes on."""
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    reader = DatasetReader(root)
    data = (root / "manifest.json").read_bytes()
    (root / "manifest.json").unlink()
    (root / "manifest.json").write_bytes(data)
    assert reader.decode(63)["fg_bg"].shape == (192, 192, 3)


def test_loader_stops_at_the_next_pass_when_the_dataset_is_replaced(tiny_dataset, tmp_path, one_thread):
    from training.data import DepthMaskDataset, make_loader

    root = copy_dataset(tiny_dataset, tmp_path / "data")
    loader = make_loader(DepthMaskDataset(root, "val", size=32), batch_size=2, shuffle=False, workers=2)
    assert sum(len(b["index"]) for b in loader) == 4  # every file this split needs is open in the workers now
    damage.replace_dataset(root, _other_dataset(tiny_dataset, tmp_path))
    with pytest.raises(DepthmaskError, match="changed while it was being read"):
        next(iter(loader))


# ---- the manifest check is the readers' own: the library refuses what the CLI refuses -----------------
def test_library_reader_refuses_before_opening(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    damage.escaping_shard_path(root)
    with pytest.raises(DepthmaskError, match=r"shards\[0\]\.path"):
        DatasetReader(root)
    from training.data import DepthMaskDataset

    with pytest.raises(DepthmaskError, match=r"shards\[0\]\.path"):
        DepthMaskDataset(root, "train")


def test_records_are_checked_in_the_batch_path(tiny_dataset, tmp_path, one_thread):
    """The training batch path and the straightforward decode give the same line for a crafted record."""
    from reference_decode import load_sample
    from training.data import DepthMaskDataset

    root = copy_dataset(tiny_dataset, tmp_path / "data")
    damage.craft_record(root, VAL_INDEX, {"x": -5})
    dataset = DepthMaskDataset(root, "val", size=32)
    position = int(np.flatnonzero(dataset.indices == VAL_INDEX)[0])
    with pytest.raises(DepthmaskError, match=f"shard-00003.lmdb key {VAL_INDEX}: depth box") as batch:
        dataset.__getitems__([position])
    with pytest.raises(DepthmaskError) as single:
        load_sample(dataset, position)
    assert str(batch.value) == str(single.value)


# ---- an error inside a DataLoader worker reads as without workers -------------------------------------
def test_worker_errors_read_as_without_workers(damaged, one_thread):
    """The real DataLoader path: the error a worker raises reaches the main process wrapped by torch ("Caught
    DepthmaskError in DataLoader worker process 0 ... Original Traceback"); the CLI's user_errors shows the
    original line, the same as with --workers 0."""
    from pipeline.cli_support import unwrap_message
    from training.data import DepthMaskDataset, make_loader

    for name, _, fragments, kind in DAMAGES:
        if kind != "record":
            continue
        lines = []
        for workers in (0, 2):
            loader = make_loader(DepthMaskDataset(damaged[name], "val", size=32), batch_size=4, shuffle=False,
                                 workers=workers)
            batches = iter(loader)
            try:
                next(batches)
            except Exception as exc:  # noqa: BLE001 - the error is the result
                lines.append(unwrap_message(exc))
            else:
                pytest.fail(f"{name}: the damaged record was read without an error")
            finally:
                # the workers are stopped here, not by a garbage collection at some later point of the
                # suite (where torch's SIGCHLD handler can interrupt the shutdown half-way, leaving queue
                # pipes that another owner's descriptors reuse: "Bad file descriptor" in a later loader)
                if loader._iterator is not None:
                    loader._iterator._shutdown_workers()
                del batches, loader
        assert lines[0][0] == "DepthmaskError" and lines[0] == lines[1], (name, lines)
        assert all(f.lower() in lines[0][1].lower() for f in fragments), (name, lines[0])

"""Golden hashes: two small builds must give byte for byte the shards, backgrounds file and manifest
hashes that the code gave when these constants were recorded (before issue 11's refactor).

Every content option is passed explicitly, so a later change of a default changes nothing here. An
intentional change of the output (new scenes, codecs, placement) changes these constants: regenerate
them with `python tests/test_shard_hashes.py` (it prints both tables) and say why in the commit.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.assets import UserInputs  # noqa: E402
from pipeline.build import BuildOptions, build_dataset  # noqa: E402
from pipeline.format import read_json  # noqa: E402

CONTENT = {"seed": 7, "backgrounds": 4, "foregrounds": 4, "positions": 2, "flip": True, "limit": None, "size": 192,
           "shard_size": 16, "val_fraction": 0.25, "jpeg_quality": 90, "depth_storage": "delta",
           "placement": "fixed"}

# PROCEDURAL recorded at 536dcbf (after the intentional new object kit of 2d16623, before the build split);
# USER_FOLDERS recorded at 6205420 (before every issue 11 change) and unchanged since
PROCEDURAL = {'files': {'backgrounds.lmdb': 'cc2b38bd60318cacfa0e052c212934e53c0589caf13b27ade3de0ca30ea61c50',
           'shards/shard-00000.lmdb': 'bd9ba40f343344e1dda99941d4bf773d2a7d53dbc83d220feb75c2daac73adf8',
           'shards/shard-00001.lmdb': 'c2a06031b67e7dfc9d2f4b72fd6ba6d3eca8859fd848fed68730728778efc9c4',
           'shards/shard-00002.lmdb': '47d1309e7b3e2c62c39d4f09c54947d96b070d91b6abeef8532bc02d2436f904',
           'shards/shard-00003.lmdb': '5c230b90e93e9fdce05d1e8e6e0924764946c5471ce867d64a4964c4d8bc7f74'},
 'samples': 64,
 'stats': '3541b40c862ac74dc9b14940d7c018c287760ffdc9b1ca39cdbc0f4cb72ca781'}
USER_FOLDERS = {'files': {'backgrounds.lmdb': '25cea1679304594f086a44c9491c462ecbe2ae08224d23e48b9330bca280141b',
           'shards/shard-00000.lmdb': '7b120fa6c00cdd74f23215b1b5c034fd39f89fad8a1e9c83a39e83913dc330ac',
           'shards/shard-00001.lmdb': '575dfdfd8c7a2a26ff52ae5cbca9b37484ccf9585936b1bb36a1d23f3a41d193',
           'shards/shard-00002.lmdb': 'c2b317333a0e75b229c365dd317408110b305b29d252eea8fe963ec02f5dc55a',
           'shards/shard-00003.lmdb': 'a802f0310c82d7b380c255cd4b48eac70f56984bab1c727684dc2b00473a7f76'},
 'samples': 64,
 'stats': '694cdaa106c7bda50e486a479a74af919686451a6f2b11d9c74e09d475ab6298'}


def build_procedural(output: Path) -> dict:
    build_dataset(BuildOptions(output=output, workers=1, **CONTENT), progress=False, log=lambda m: None)
    return dataset_hashes(output)


def build_user_folders(output: Path, folders_root: Path) -> dict:
    from user_data_kit import write_user_folders

    folders = write_user_folders(folders_root)
    inputs = UserInputs(bg_dir=folders["bg"], fg_dir=folders["fg"], bg_depth_dir=folders["bg_depth"])
    content = {**CONTENT, "backgrounds": None, "foregrounds": None}  # every file of the folders
    build_dataset(BuildOptions(output=output, workers=1, inputs=inputs, **content), progress=False, log=lambda m: None)
    return dataset_hashes(output)


def dataset_hashes(root: Path) -> dict:
    """Each shard's and the backgrounds file's content hash, as the manifest records them and as
    the files hash now, the sample count and a hash of the manifest's exact statistics."""
    from pipeline.shards import ShardHasher, close_readonly, iterate_records
    from pipeline.format import encode_key

    manifest = read_json(root / "manifest.json", "manifest")
    files = {}
    for entry in [*manifest["shards"], manifest["backgrounds"]]:
        hasher = ShardHasher()
        for index, value in iterate_records(root / entry["path"]):
            hasher.update(encode_key(index), value)
        close_readonly(root / entry["path"])
        assert hasher.hexdigest() == entry["sha256"], entry["path"]
        files[entry["path"]] = entry["sha256"]
    stats = hashlib.sha256(json.dumps(manifest["stats"], sort_keys=True).encode()).hexdigest()
    return {"samples": manifest["sample_count"], "files": files, "stats": stats}


def test_procedural_build_is_byte_identical(tmp_path):
    assert build_procedural(tmp_path / "data") == PROCEDURAL


def test_user_folder_build_is_byte_identical(tmp_path):
    assert build_user_folders(tmp_path / "data", tmp_path / "folders") == USER_FOLDERS


if __name__ == "__main__":
    import pprint
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print("PROCEDURAL =", pprint.pformat(build_procedural(Path(tmp) / "a")))
        print("USER_FOLDERS =", pprint.pformat(build_user_folders(Path(tmp) / "b", Path(tmp) / "f")))

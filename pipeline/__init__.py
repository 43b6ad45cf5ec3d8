"""depthmask's dataset pipeline: build (bg, fg_bg, mask, depth) quadruplets into sharded LMDB.

    from pipeline import BuildOptions, build_dataset, DatasetReader
    summary = build_dataset(BuildOptions(output="out/data", backgrounds=8, foregrounds=8, positions=2))
    reader = DatasetReader("out/data"); sample = reader.decode(0)
"""
from .build import BuildOptions, BuildSummary, build_dataset
from .errors import DepthmaskError
from .format import FORMAT_NAME, FORMAT_VERSION, read_manifest
from .reader import DatasetReader
from .report import describe_dataset, format_table, verify_dataset
from .version import __version__

__all__ = [
    "BuildOptions", "BuildSummary", "build_dataset", "DatasetReader", "DepthmaskError", "FORMAT_NAME",
    "FORMAT_VERSION", "read_manifest", "describe_dataset", "format_table", "verify_dataset", "__version__",
]

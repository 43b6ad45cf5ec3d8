"""Recipe build vs materialised build of the same options, in the same run (issue 14 section 3).

    python tools/bench_recipes.py out/bench-recipes [--limit N] [--backgrounds B] [--materialised-limit M]

Builds the recipe dataset of the default options (or the first --limit samples, or the plan of the
first --backgrounds scenes) and a materialised build of the first --materialised-limit samples (0,
the default: none, so the recipe build runs alone; -1: the same count as the recipe), and prints
seconds and bytes of both; a limited materialised build is extrapolated linearly to the recipe's
sample count (and says so). The machine's load averages before and after are printed with them:
on a shared machine the seconds are only comparable at the same load.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path


def main() -> None:
    from pipeline.build import build_dataset
    from pipeline.options import BuildOptions
    from pipeline.recipe_build import build_recipes

    parser = argparse.ArgumentParser()
    parser.add_argument("output", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--backgrounds", type=int, default=None)
    parser.add_argument("--placement", choices=("fixed", "depth-scaled"), default=None)
    parser.add_argument("--materialised-limit", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)
    common = {"limit": args.limit, "backgrounds": args.backgrounds, "placement": args.placement,
              "workers": args.workers}
    recipe = BuildOptions(output=args.output / "recipes", **common)
    load_before = os.getloadavg()
    started = time.perf_counter()
    summary = build_recipes(recipe, progress=False, log=lambda m: None)
    recipe_s = time.perf_counter() - started
    result = {"machine": f"{os.cpu_count()} cores", "load_average_before": [round(v, 2) for v in load_before],
              "recipe_samples": summary.samples, "recipe_s": round(recipe_s, 1),
              "recipe_bytes": summary.bytes_on_disk,
              "recipe_files": json.loads((args.output / "recipes" / "manifest.json").read_text())["sizes"]}
    limit = summary.samples if args.materialised_limit < 0 else args.materialised_limit
    if limit:
        started = time.perf_counter()
        mat = build_dataset(BuildOptions(output=args.output / "samples", **{**common, "limit": limit}),
                            progress=False, log=lambda m: None)
        seconds = time.perf_counter() - started
        factor = summary.samples / mat.samples
        result.update({"materialised_samples": mat.samples, "materialised_s": round(seconds, 1),
                       "materialised_bytes": mat.bytes_on_disk,
                       "materialised_extrapolated": factor != 1,
                       "materialised_s_at_recipe_count": round(seconds * factor, 1),
                       "materialised_bytes_at_recipe_count": int(mat.bytes_on_disk * factor)})
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

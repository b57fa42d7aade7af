"""Data-loading benchmark: parse + 5-core + cache a file, then load it from the cache.

    python benchmarks/bench_data_loading.py /tmp/Electronics.csv --format amazon-2018-csv --k-core 5

Runs the cold build and the cache load in fresh subprocesses so each one's peak RSS
(ru_maxrss) is its own. Prints one JSON line per phase.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def phase(path: str, fmt: str, k_core: int, cache_dir: str, duplicates: str) -> dict:
    from recengine.data.loading import FileDatasetOptions, load_file_dataset

    start = time.perf_counter()
    options = FileDatasetOptions(path=path, format=fmt, k_core=k_core, cache_dir=cache_dir, duplicates=duplicates)
    dataset, meta = load_file_dataset(options)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "cache_hit": meta["cache_hit"], "parse_s": meta.get("parse_s"),
            "users": dataset.sequences.num_users, "items": dataset.num_items, "interactions": len(dataset.sequences.items),
            "raw": meta.get("raw_interactions"), "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--k-core", type=int, default=5)
    parser.add_argument("--duplicates", default="keep")
    parser.add_argument("--cache-dir", default="/tmp/recengine-bench-cache")
    parser.add_argument("--phase", choices=["build", "load"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps({"phase": args.phase, **phase(args.path, args.format, args.k_core, args.cache_dir, args.duplicates)}))
        return
    subprocess.run(["rm", "-rf", args.cache_dir], check=True)
    for name in ("build", "load"):
        subprocess.run([sys.executable, __file__, args.path, "--format", args.format, "--k-core", str(args.k_core),
                        "--duplicates", args.duplicates, "--cache-dir", args.cache_dir, "--phase", name], check=True)


if __name__ == "__main__":
    main()

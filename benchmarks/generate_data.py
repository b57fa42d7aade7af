"""Generate interaction files of the real size and format for the data-loading benchmarks.

    python benchmarks/generate_data.py ratings-csv /tmp/Electronics.csv --rows 21000000
    python benchmarks/generate_data.py reviews-json /tmp/Electronics_5.json.gz --rows 6700000

- ratings-csv: the Amazon 2018 ratings-only CSV (item,user,rating,time), the Electronics
  shape: ~9.8M users, ~760k items, Zipf-like item popularity, realistic ASINs and reviewer ids.
- reviews-json: the Amazon 2018 review JSON lines, gzip (Electronics 5-core shape: ~730k users,
  ~160k items), every field of the real files, with review text drawn from a word list.
"""

from __future__ import annotations

import argparse
import json
import subprocess

import numpy as np

ALNUM = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)
WORDS = ("the this works great battery cable charger sound quality price good bad would recommend "
         "product after months use screen easy setup returned amazon love it not worth money fast "
         "shipping arrived broken perfect fits laptop phone camera headphones speaker mouse keyboard").split()


def ids(rng, n: int, prefix: bytes, length: int) -> np.ndarray:
    """n distinct-enough random ids like b'A1C6M8LCIX4M6M' (prefix + uppercase alphanumerics)."""
    body = ALNUM[rng.integers(0, len(ALNUM), size=(n, length - len(prefix)))]
    raw = np.concatenate([np.tile(np.frombuffer(prefix, np.uint8), (n, 1)), body], axis=1)
    return raw.view(f"S{length}").ravel()


def zipf_choice(rng, n_pool: int, size: int, exponent: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_pool + 1) ** exponent
    return rng.choice(n_pool, size=size, p=weights / weights.sum())


def ratings_csv(path: str, rows: int, users: int, items: int, seed: int = 0, chunk: int = 2_000_000) -> None:
    rng = np.random.default_rng(seed)
    user_ids, item_ids = ids(rng, users, b"A", 14), ids(rng, items, b"B0", 10)
    with open(path, "wb") as out:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            u = user_ids[zipf_choice(rng, users, n, 0.5)]
            i = item_ids[zipf_choice(rng, items, n, 0.9)]
            r = rng.choice(np.array([b"1.0", b"2.0", b"3.0", b"4.0", b"5.0"]), size=n, p=[.06, .05, .09, .2, .6])
            t = rng.integers(946684800, 1538352000, size=n).astype("S10")
            lines = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(i, b","), u), b","), r), b","), t)
            out.write(b"\n".join(lines.tolist()) + b"\n")


def reviews_json(path: str, rows: int, users: int, items: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    user_ids = [u.decode() for u in ids(rng, users, b"A", 14)]
    item_ids = [i.decode() for i in ids(rng, items, b"B0", 10)]
    gz = subprocess.Popen(["gzip", "-1", "-c"], stdin=subprocess.PIPE, stdout=open(path, "wb"))  # compress on the other core
    block = 100_000
    for start in range(0, rows, block):
        n = min(block, rows - start)
        u = rng.integers(0, users, n)
        i = zipf_choice(rng, items, n, 0.8)
        stars = rng.choice(5, n, p=[.06, .05, .09, .2, .6]) + 1
        times = rng.integers(946684800, 1538352000, n)
        lengths = rng.integers(5, 120, n)
        words = rng.integers(0, len(WORDS), int(lengths.sum()))
        ends = np.cumsum(lengths)
        lines = []
        for k in range(n):
            text = " ".join(WORDS[w] for w in words[ends[k] - lengths[k]:ends[k]])
            lines.append(json.dumps({"overall": float(stars[k]), "vote": str(k % 7), "verified": bool(k % 3),
                                     "reviewTime": "09 1, 2016", "reviewerID": user_ids[u[k]], "asin": item_ids[i[k]],
                                     "style": {"Format:": " Kindle Edition"}, "reviewerName": "Shelly F",
                                     "reviewText": text, "summary": text[:40], "unixReviewTime": int(times[k])}))
        gz.stdin.write(("\n".join(lines) + "\n").encode())
    gz.stdin.close()
    gz.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["ratings-csv", "reviews-json"])
    parser.add_argument("path")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--users", type=int, help="distinct users (default: the Electronics ratio)")
    parser.add_argument("--items", type=int, help="distinct items (default: the Electronics ratio)")
    args = parser.parse_args()
    if args.kind == "ratings-csv":
        ratings_csv(args.path, args.rows, args.users or int(args.rows * 0.47), args.items or int(args.rows * 0.036))
    else:
        reviews_json(args.path, args.rows, args.users or int(args.rows * 0.109), args.items or int(args.rows * 0.0238))


if __name__ == "__main__":
    main()

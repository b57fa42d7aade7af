"""Fetching public datasets: streamed, resumable, verified, safely extracted.

- The body streams to ``<name>.part`` with a rich progress bar; a later run resumes it with
  an HTTP Range request (a server that ignores Range sends the whole file, which restarts it).
- The finished file is checked against the known MD5 (MovieLens publishes them) or, where no
  checksum is published (Amazon 2018), against the size the server announced.
- Zip archives are extracted member by member; a member whose path would land outside the
  target folder (absolute, ``..``, a drive letter) stops the extraction.
- Offline, one line says so and where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from recengine.errors import UserError
from recengine.progress import progress_bar

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    md5: str | None  # published checksum, when there is one
    data_file: str  # the interactions file, relative to the target folder, once extracted
    description: str


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("ml-1m", "https://files.grouplens.org/datasets/movielens/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906",
           "ml-1m/ratings.dat", "MovieLens 1M (1,000,209 ratings)"),
    Source("ml-20m", "https://files.grouplens.org/datasets/movielens/ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3",
           "ml-20m/ratings.csv", "MovieLens 20M (20,000,263 ratings)"),
    Source("ml-25m", "https://files.grouplens.org/datasets/movielens/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada",
           "ml-25m/ratings.csv", "MovieLens 25M (25,000,095 ratings)"),
    Source("amazon2018-electronics-5core", "https://jmcauley.ucsd.edu/data/amazon_v2/categoryFilesSmall/Electronics_5.json.gz",
           None, "Electronics_5.json.gz", "Amazon 2018 Electronics 5-core reviews (6,739,590 reviews)"),
    Source("amazon2018-electronics-ratings", "https://jmcauley.ucsd.edu/data/amazon_v2/categoryFilesSmall/Electronics.csv",
           None, "Electronics.csv", "Amazon 2018 Electronics ratings only (about 21M ratings)"),
]}


def _offline(source: Source, target: Path, reason: object) -> UserError:
    name = PurePosixPath(source.url).name
    return UserError(f"cannot reach {source.url} ({reason}); download it by hand and put it at {target / name}, "
                     "then run this command again to verify and extract it")


def fetch(url: str, dest: Path, timeout: float = 30.0, console=None) -> int | None:
    """Stream ``url`` to ``dest`` (resuming ``dest.part``); returns the announced total size."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "recengine"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part file is already complete
            os.replace(part, dest)
            return have
        raise
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, progress_bar("MB", console) as bar:
            task = bar.add_task(f"{dest.name}{' (resumed)' if resumed else ''}",
                                total=None if total is None else total / 1e6, completed=have / 1e6)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.advance(task, len(chunk) / 1e6)
    got = part.stat().st_size
    if total is not None and got != total:
        raise UserError(f"{url}: download incomplete ({got:,} of {total:,} bytes); run the command again to resume")
    os.replace(part, dest)
    return total


def md5_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def safe_extract(archive: Path, target: Path) -> list[Path]:
    """Extract a zip into ``target``, refusing any member that would land outside it."""
    root = target.resolve()
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            for m in members:
                name = m.filename.replace("\\", "/")
                dest = (root / name).resolve()
                if name.startswith("/") or ":" in PurePosixPath(name).parts[0] or not dest.is_relative_to(root):
                    raise UserError(f"{archive}: member {m.filename!r} would be written outside {target}; refusing to extract")
            for m in members:
                z.extract(m, root)
            return [root / m.filename for m in members if not m.is_dir()]
    except zipfile.BadZipFile as exc:
        raise UserError(f"{archive}: not a valid zip archive ({exc}); delete it and download again") from None


def download(name: str, target: Path, console=None, timeout: float = 30.0, sources: dict[str, Source] = SOURCES) -> Path:
    """Fetch, verify and extract dataset ``name`` into ``target``; returns its interactions file."""
    if name not in sources:
        raise UserError(f"unknown dataset '{name}' (known: {', '.join(sources)})")
    source = sources[name]
    target.mkdir(parents=True, exist_ok=True)
    dest = target / PurePosixPath(source.url).name
    total = None
    if not dest.exists():
        try:
            total = fetch(source.url, dest, timeout, console)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code != 416:
                raise UserError(f"{source.url}: server answered {exc.code} {exc.reason}") from None
            raise _offline(source, target, getattr(exc, "reason", exc)) from None
    if source.md5 is not None and (digest := md5_of(dest)) != source.md5:
        bad = dest.with_name(dest.name + ".corrupt")
        os.replace(dest, bad)
        raise UserError(f"{dest}: MD5 {digest} does not match the published {source.md5}; moved it to {bad}, run again to re-download")
    if total is not None and dest.stat().st_size != total:
        raise UserError(f"{dest}: size {dest.stat().st_size:,} differs from the announced {total:,}; delete it and run again")
    if zipfile.is_zipfile(dest):
        safe_extract(dest, target)
    data = target / source.data_file
    if not data.exists():
        raise UserError(f"{dest}: expected {source.data_file} inside; delete {dest} and download again")
    return data

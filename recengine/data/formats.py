"""Readers for the public interaction-log formats, built on pyarrow's multithreaded parsers.

Every format turns a file into an ``Interactions`` table (user, item, rating, time), reading
only the columns it needs. Reading has two paths:

- the fast path hands the whole file to pyarrow (CSV or JSON reader, explicit column types);
- only when pyarrow rejects the file, a line-by-line scan finds the bad lines: it reports the
  first one as ``file:line: text`` or, with ``on_bad_lines="skip"``, drops and counts them, and
  the clean lines go through the fast path again. Clean files never pay for Python loops.

Before any of that, the first 64 KiB are sniffed: binary data, a file without line breaks and
a format that does not match the content each fail at once with one line.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import re
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from recengine.errors import UserError

SNIFF_BYTES = 64 * 1024
MAX_LINE = 16 * 1024 * 1024  # a longer "line" means this is not an interactions file
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Interactions:
    """Raw interactions in file order; ``items`` index ``item_names``."""

    users: np.ndarray  # int64 codes, any order
    items: np.ndarray  # int64 codes into item_names
    item_names: list[str]  # original item ids, sorted (numerically for integer ids)
    ratings: np.ndarray | None  # float32, None when the format has no ratings
    times: np.ndarray | None  # int64 in the file's unit (see ``time_scale``); None: file order is time
    time_scale: int = 1  # divide times by this to get seconds
    skipped: int = 0  # bad lines dropped with on_bad_lines="skip"

    def __len__(self) -> int:
        return len(self.users)


# --------------------------------------------------------------------------------------------
# Formats


@dataclass(frozen=True)
class Format:
    name: str
    family: str  # the dataset plugin that reads it: movielens, amazon or user-item
    description: str
    example: str  # one valid data line, shown in error messages
    header: str | None  # exact first line, when the format has one
    line_ok: Callable[[str], bool]  # is this a valid data line?
    time_scale: int = 1
    encoding: str = "utf-8"

    def score(self, lines: list[str]) -> float:
        """How well the first lines fit: the share of valid data lines, plus 1 for a matching header."""
        bonus = 0.0
        if self.header is not None:
            if not lines or lines[0].strip() != self.header:
                return 0.0
            lines, bonus = lines[1:], 1.0
        sample = lines[:5]
        return bonus + sum(self.line_ok(line) for line in sample) / len(sample) if sample else bonus

    def matches(self, lines: list[str]) -> bool:
        # Most, not all, of the first lines: a malformed line among them is reported with its line number later.
        return self.score(lines) - (self.header is not None) > 0.5


@dataclass(frozen=True)
class CsvFormat(Format):
    delimiter: str = ","
    columns: tuple[str, ...] = ()  # names of the file's columns; "user", "item", "rating", "time" are read
    int_users: bool = False
    int_items: bool = False

    def read(self, source, clean: bool = False, block_size: int = 1 << 22) -> Interactions:
        wanted = [c for c in ("user", "item", "rating", "time") if c in self.columns]
        types = {"user": pa.int64() if self.int_users else pa.string(),
                 "item": pa.int64() if self.int_items else pa.string(),
                 "rating": pa.float32(), "time": pa.int64()}
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=list(self.columns), skip_rows=1 if self.header else 0,
                                           encoding=self.encoding, block_size=block_size),
            parse_options=pacsv.ParseOptions(delimiter=self.delimiter, quote_char=False, escape_char=False),
            convert_options=pacsv.ConvertOptions(include_columns=wanted, column_types={c: types[c] for c in wanted},
                                                 strings_can_be_null=False),
        )
        return _to_interactions(table, self.time_scale)


def _literal(line: str):
    # Review text such as "C:\pictures" is an unknown escape to Python's parser: still a valid
    # string, but it warns once per line, and this runs line by line over a damaged file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        return ast.literal_eval(line)


@dataclass(frozen=True)
class JsonFormat(Format):
    fields: tuple[str, str, str, str] = ("reviewerID", "asin", "overall", "unixReviewTime")  # user, item, rating, time
    literal: bool = False  # Python dict literals (some 2014 files) rather than strict JSON

    def parse_line(self, line: str) -> dict | None:
        """The four needed fields of one line, normalised, or None when the line is bad."""
        try:
            record = _literal(line) if self.literal else json.loads(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            return None
        if not isinstance(record, dict):
            return None
        user, item, rating, time = (record.get(f) for f in self.fields)
        if not (isinstance(user, str) and user and isinstance(item, str) and item):
            return None
        if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not np.isfinite(rating):
            return None
        if isinstance(time, bool) or not isinstance(time, int) or not (0 <= time < 2**62):
            return None
        return {"user": user, "item": item, "rating": float(rating), "time": time}

    def read(self, source, clean: bool = False, block_size: int = 1 << 24) -> Interactions:
        if self.literal and not clean:
            return self._read_literals(source, block_size)
        schema = pa.schema([(self.fields[0], pa.string()), (self.fields[1], pa.string()),
                            (self.fields[2], pa.float32()), (self.fields[3], pa.int64())])
        table = pajson.read_json(
            source,
            read_options=pajson.ReadOptions(block_size=block_size),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        table = table.rename_columns(["user", "item", "rating", "time"])
        return _to_interactions(table, self.time_scale)


    def _read_literals(self, source, block_size: int) -> Interactions:
        """Python dict literals: each field pulled out of the raw lines by a vectorised regex.

        A line where any field is missing fails the fast path, and the caller's line-by-line
        scan (``ast.literal_eval``, exact but slow) reports or skips it.
        """
        lines = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=["line"], block_size=block_size),
            parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False),
            convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}),
        ).column("line")
        patterns = {"user": r"'%s': '(?P<v>[^'\\]+)'", "item": r"'%s': '(?P<v>[^'\\]+)'",
                    "rating": r"'%s': (?P<v>-?\d+(?:\.\d*)?)[,}]", "time": r"'%s': (?P<v>\d+)[,}]"}
        columns = {}
        for (name, pattern), field in zip(patterns.items(), self.fields):
            found = pc.struct_field(pc.extract_regex(lines, pattern % re.escape(field)), [0])
            if found.null_count:
                raise pa.ArrowInvalid(f"field {field} not found on every line")
            columns[name] = found
        table = pa.table({"user": columns["user"], "item": columns["item"],
                          "rating": pc.cast(columns["rating"], pa.float32()), "time": pc.cast(columns["time"], pa.int64())})
        return _to_interactions(table, self.time_scale)


def _regex(pattern: str) -> Callable[[str], bool]:
    compiled = re.compile(pattern)
    return lambda line: compiled.fullmatch(line.rstrip("\r\n")) is not None


_RATING = r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_ID = r"[^,\s\"']+"

FORMATS: dict[str, Format] = {f.name: f for f in [
    CsvFormat("ml-100k", "movielens", "MovieLens 100K u.data: user, item, rating, time; tab-separated", "196\t242\t3\t881250949",
              None, _regex(rf"\d+\t\d+\t{_RATING}\t\d+"), delimiter="\t", columns=("user", "item", "rating", "time"),
              int_users=True, int_items=True),
    CsvFormat("ml-dat", "movielens", "MovieLens 1M/10M ratings.dat: user::item::rating::time, latin-1", "1::1193::5::978300760",
              None, _regex(rf"\d+::\d+::{_RATING}::\d+"), encoding="latin-1", delimiter=":",
              # '::' read with ':' as the delimiter gives empty columns in between, which are skipped.
              columns=("user", "_1", "item", "_2", "rating", "_3", "time"), int_users=True, int_items=True),
    CsvFormat("movielens-csv", "movielens", "MovieLens 20M/25M/32M/latest ratings.csv with header", "1,31,2.5,1260759144",
              "userId,movieId,rating,timestamp", _regex(rf"\d+,\d+,{_RATING},\d+"),
              columns=("user", "item", "rating", "time"), int_users=True, int_items=True),
    CsvFormat("amazon-2014-csv", "amazon", "Amazon 2014 ratings-only CSV: user,item,rating,time; no header",
              "AKM1MP6P0OYPR,0132793040,5.0,1365811200", None, _regex(rf"{_ID},{_ID},{_RATING},\d+"),
              columns=("user", "item", "rating", "time")),
    CsvFormat("amazon-2018-csv", "amazon", "Amazon 2018 ratings-only CSV: item,user,rating,time; no header",
              "0001713353,A1C6M8LCIX4M6M,5.0,1123804800", None, _regex(rf"{_ID},{_ID},{_RATING},\d+"),
              columns=("item", "user", "rating", "time")),
    CsvFormat("amazon-2023-csv", "amazon", "Amazon 2023 rating-only CSV with header; time in milliseconds",
              "AFSKPY37N3C43SOI5IEXEK5JSIYA,B07J3GH1W1,5.0,1547589356557", "user_id,parent_asin,rating,timestamp",
              _regex(rf"{_ID},{_ID},{_RATING},\d+"), time_scale=1000, columns=("user", "item", "rating", "time")),
    JsonFormat("amazon-json", "amazon", "Amazon 2014/2018 review JSON lines (reviewerID, asin, overall, unixReviewTime), plain or .gz",
               '{"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "overall": 5.0, "unixReviewTime": 1252800000}',
               None, lambda line: JsonFormat.parse_line(FORMATS["amazon-json"], line) is not None),
    JsonFormat("amazon-json-literal", "amazon", "Amazon 2014 review lines written as Python dict literals, plain or .gz",
               "{'reviewerID': 'A2SUAM1J3GNN3B', 'asin': '0000013714', 'overall': 5.0, 'unixReviewTime': 1252800000}",
               None, lambda line: JsonFormat.parse_line(FORMATS["amazon-json-literal"], line) is not None, literal=True),
    JsonFormat("amazon-2023-json", "amazon", "Amazon 2023 review JSON lines (user_id, parent_asin, rating, timestamp in ms), plain or .gz",
               '{"user_id": "AFSKPY37N3C43SOI5IEXEK5JSIYA", "parent_asin": "B07J3GH1W1", "rating": 5.0, "timestamp": 1547589356557}',
               None, lambda line: JsonFormat.parse_line(FORMATS["amazon-2023-json"], line) is not None, time_scale=1000,
               fields=("user_id", "parent_asin", "rating", "timestamp")),
    CsvFormat("user-item", "user-item", "'user item' per line (SASRec/BERT4Rec preprocessed text), chronological per user",
              "1 6393", None, _regex(r"\d+[ \t]\d+"), delimiter=" ", columns=("user", "item"), int_users=True, int_items=True),
]}

_ASIN = re.compile(r"\d{9}[\dX]|B[0-9A-Z]{9}")


def formats_of(family: str) -> list[str]:
    return [name for name, f in FORMATS.items() if f.family == family]


# --------------------------------------------------------------------------------------------
# Opening, sniffing and detection


def _open_binary(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gz else open(path, "rb")


def sniff(path: Path) -> list[str]:
    """The first complete lines of a file (decompressed), after the fail-fast checks."""
    if not path.exists():
        where = "" if path.is_absolute() else f" (a relative dataset.path is read from the current folder: {path.resolve()})"
        raise UserError(f"{path}: file not found{where}; check dataset.path, or override it with dataset.path=FILE; "
                        "`recengine data download --help` lists fetchable datasets")
    if not path.is_file():
        raise UserError(f"{path}: not a file (dataset.path must name the interactions file itself)")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path}: file is empty")
    try:
        with _open_binary(path) as f:
            head = f.read(SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read it ({exc})") from None
    if b"\x00" in head:
        raise UserError(f"{path}: binary data, not a text interactions file (is dataset.path the right file?)")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sniffed block
            text = head.decode("latin-1")  # ML-1M/10M files are latin-1
        else:
            text = head[: exc.start].decode("utf-8")
    lines = text.split("\n")
    if len(lines) == 1 and len(head) == SNIFF_BYTES:
        raise UserError(f"{path}: no line break in the first {SNIFF_BYTES // 1024} KiB: not a line-based interactions file")
    if len(head) == SNIFF_BYTES:
        lines = lines[:-1]  # the last one may be cut
    lines = [line.rstrip("\r") for line in lines if line.strip()]
    if not lines:
        raise UserError(f"{path}: file holds no data lines")
    return lines


def detect(lines: list[str], family: str | None = None) -> str | None:
    """The format whose pattern the first lines match, preferring ``family``'s formats."""
    candidates = [f for f in FORMATS.values() if f.matches(lines)]
    best = max((f.score(lines) for f in candidates), default=0)
    candidates = [f for f in candidates if f.score(lines) == best]
    if {f.name for f in candidates} >= {"amazon-2014-csv", "amazon-2018-csv"}:
        # Same shape, columns swapped: the item column is the one holding ASINs.
        rows = [line.split(",") for line in lines[:200] if line.count(",") == 3]
        first = sum(bool(_ASIN.fullmatch(r[0])) for r in rows)
        second = sum(bool(_ASIN.fullmatch(r[1])) for r in rows)
        drop = "amazon-2014-csv" if first > second else "amazon-2018-csv"
        candidates = [f for f in candidates if f.name != drop]
    preferred = [f for f in candidates if f.family == family] or candidates
    return preferred[0].name if preferred else None


def resolve_format(path: Path, fmt: str, family: str) -> Format:
    """The format to read ``path`` with; one clear line when it is unknown or does not fit."""
    lines = sniff(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}' (formats: auto, {', '.join(FORMATS)})")
    seen = detect(lines, family)
    if fmt == "auto":
        if seen is None:
            raise UserError(f"{path}: cannot recognise the format of its first line {lines[0][:120]!r} "
                            f"(formats: {', '.join(formats_of(family))}; see docs/datasets.md)")
        if FORMATS[seen].family != family:
            raise UserError(f"{path}: looks like {seen} ({FORMATS[seen].description}); "
                            f"read it with dataset name = \"{FORMATS[seen].family}\"")
        return FORMATS[seen]
    chosen = FORMATS[fmt]
    if not chosen.matches(lines) or (seen is not None and FORMATS[seen].score(lines) > chosen.score(lines)):
        hint = f"; it looks like {seen}" if seen else ""
        raise UserError(f"{path}: content does not match format '{fmt}' (expected e.g. {chosen.example!r}, "
                        f"first line is {lines[0][:120]!r}{hint})")
    return chosen


# --------------------------------------------------------------------------------------------
# Reading


def _codes(column: pa.ChunkedArray, sort: bool = True) -> tuple[np.ndarray, pa.Array | np.ndarray]:
    """(int64 codes, distinct values) of an integer or dictionary column; values sorted when ``sort``."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        # One hash table across chunks: every chunk gets the same, final dictionary.
        column = pc.dictionary_encode(column)
    if pa.types.is_dictionary(column.type):
        chunks = column.chunks
        if not chunks:
            return np.zeros(0, np.int64), pa.array([], pa.string())
        dictionary = chunks[-1].dictionary
        if any(len(c.dictionary) != len(dictionary) for c in chunks):  # not from dictionary_encode: unify (slower)
            chunks = pa.Table.from_arrays([column], ["c"]).unify_dictionaries().column(0).chunks
            dictionary = chunks[-1].dictionary
        codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int64)
        if not sort:
            return codes, dictionary
        order = pc.sort_indices(dictionary).to_numpy()  # deterministic ids, whatever the chunking
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        return rank[codes], dictionary.take(pa.array(order))
    values = column.to_numpy()
    distinct, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), distinct


def _to_interactions(table: pa.Table, time_scale: int) -> Interactions:
    for name in table.column_names:
        column = table.column(name)
        if column.null_count:
            raise pa.ArrowInvalid(f"column {name} has missing values")
        if pa.types.is_string(column.type) and pc.min(pc.utf8_length(column)).as_py() == 0:
            raise pa.ArrowInvalid(f"column {name} has empty values")
    # Both columns at once: pyarrow releases the GIL, and hashing millions of ids is the slow part.
    with ThreadPoolExecutor(2) as pool:
        users_job = pool.submit(_codes, table.column("user"), sort=False)  # user names are not kept
        items, names = _codes(table.column("item"))
        users, _ = users_job.result()
    names = [str(v) for v in (names.to_pylist() if isinstance(names, pa.Array) else names.tolist())]
    ratings = table.column("rating").to_numpy().astype(np.float32) if "rating" in table.column_names else None
    times = table.column("time").to_numpy().astype(np.int64) if "time" in table.column_names else None
    return Interactions(users, items, names, ratings, times, time_scale)


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, bytes, str]]:
    """(line number, raw bytes, decoded text) of every line; refuses absurdly long lines."""
    with _open_binary(path) as f:
        number = 0
        while True:
            raw = f.readline(MAX_LINE + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE:
                raise UserError(f"{path}:{number}: line longer than {MAX_LINE >> 20} MiB: not an interactions file")
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
                yield number, raw, "\ufffd" + text  # never a valid line: reported as bad
                continue
            yield number, raw, text.rstrip("\r\n")


def _clean_copy(path: Path, fmt: Format, skip: bool) -> tuple[io.BytesIO, int]:
    """The file's good lines (JSON normalised), and how many bad lines were dropped."""
    out, skipped = io.BytesIO(), 0
    for number, raw, text in _lines(path, fmt.encoding):
        if number == 1 and fmt.header is not None:
            if text.strip() != fmt.header:
                raise UserError(f"{path}:1: expected the header {fmt.header!r}, found {text[:200]!r}")
            out.write(raw.rstrip(b"\r\n") + b"\n")
            continue
        if not text.strip():
            continue  # blank lines carry nothing
        record = fmt.parse_line(text) if isinstance(fmt, JsonFormat) else (text if fmt.line_ok(text) else None)
        if record is None:
            if not skip:
                raise UserError(f"{path}:{number}: malformed {fmt.name} line: {text[:200]!r} "
                                f"(expected e.g. {fmt.example[:100]!r}); fix it or set dataset.on_bad_lines = \"skip\"")
            skipped += 1
            continue
        if isinstance(fmt, JsonFormat):
            fields = dict(zip(fmt.fields, (record["user"], record["item"], record["rating"], record["time"])))
            out.write(json.dumps(fields).encode() + b"\n")
        else:
            out.write(raw.rstrip(b"\r\n").replace(b"\t", b" ") if fmt.name == "user-item" else raw.rstrip(b"\r\n"))
            out.write(b"\n")
    out.seek(0)
    return out, skipped


def read_interactions(path: str | Path, fmt: str = "auto", family: str = "amazon", on_bad_lines: str = "error") -> Interactions:
    """Parse ``path`` into raw interactions; every user mistake is one UserError line."""
    path = Path(path)
    chosen = resolve_format(path, fmt, family)
    try:
        with _open_binary(path) as stream:
            return chosen.read(stream)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError, ValueError):
        pass  # something in the file is off: find it line by line
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read it ({exc})") from None
    try:
        clean, skipped = _clean_copy(path, chosen, on_bad_lines == "skip")
    except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt .gz
        raise UserError(f"{path}: cannot read it ({exc}); is the file complete?") from None
    try:
        result = chosen.read(clean, clean=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError, ValueError) as exc:
        # The line checks passed but a value does not fit its type (an id beyond int64, ...).
        raise UserError(f"{path}: values out of range for format {chosen.name}: {str(exc).splitlines()[0][:200]}") from None
    result.skipped = skipped
    return result

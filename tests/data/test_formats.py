"""Every format from tiny fixtures written here; bad input gives one UserError line or a counted skip."""

import gzip
import warnings

import numpy as np
import pytest

from recengine.data.formats import FORMATS, detect, read_interactions, sniff
from recengine.errors import UserError

FIXTURES = {
    # format: (family, file name, content, expected (user, item) pairs per line in file order)
    "ml-100k": ("movielens", "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n"),
    "ml-dat": ("movielens", "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"),
    "movielens-csv": ("movielens", "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n2,31,4.0,1260759100\n"),
    "amazon-2014-csv": ("amazon", "r14.csv", "AKM1MP6P0OYPR,0132793040,5.0,1365811200\nA2CX7LUOHB2NDG,0321732944,5.0,1341100800\nAKM1MP6P0OYPR,B000123456,1.0,1367193600\n"),
    "amazon-2018-csv": ("amazon", "r18.csv", "0001713353,A1C6M8LCIX4M6M,5.0,1123804800\n0321732944,A1REUF3A1YCPHM,5.0,1112140800\nB000123456,A1C6M8LCIX4M6M,1.0,1127206400\n"),
    "amazon-2023-csv": ("amazon", "r23.csv", "user_id,parent_asin,rating,timestamp\nAFSKPY37N3C43SOI5IEXEK5JSIYA,B07J3GH1W1,5.0,1547589356557\nAFSKPY37N3C43SOI5IEXEK5JSIYA,B07W397QG4,4.0,1593352422858\nAGKHLEW2SOWHNMFQIJGBECAF7INQ,B07J3GH1W1,3.0,1547589356000\n"),
    "amazon-json": ("amazon", "reviews.json", '{"overall": 5.0, "reviewerID": "A3CIUOJXQ5VDQ2", "asin": "B0000530HU", "reviewText": "nice \\"asin\\": x", "style": {"Size:": " 7 oz"}, "unixReviewTime": 1472688000}\n'
                    '{"overall": 4.0, "reviewerID": "A3CIUOJXQ5VDQ2", "asin": "B00006L9LC", "unixReviewTime": 1472688100}\n'
                    '{"reviewerID": "A1", "asin": "B0000530HU", "overall": 1, "unixReviewTime": 1400000000, "vote": "3"}\n'),
    "amazon-json-literal": ("amazon", "reviews14.json", "{'reviewerID': 'A2SUAM1J3GNN3B', 'asin': '0000013714', 'helpful': [2, 3], 'reviewText': \"it's fine\", 'overall': 5.0, 'unixReviewTime': 1252800000}\n"
                            "{'reviewerID': 'A2SUAM1J3GNN3B', 'asin': '0000031852', 'overall': 3.0, 'unixReviewTime': 1252800100}\n"
                            "{'reviewerID': 'AZZ', 'asin': '0000013714', 'overall': 2.0, 'unixReviewTime': 1252800200}\n"),
    "amazon-2023-json": ("amazon", "reviews23.jsonl", '{"rating": 5.0, "title": "ok", "user_id": "AF1", "parent_asin": "B07J3GH1W1", "timestamp": 1547589356557}\n'
                         '{"rating": 4.0, "user_id": "AF1", "parent_asin": "B07W397QG4", "timestamp": 1593352422858}\n'
                         '{"rating": 3.0, "user_id": "AF2", "parent_asin": "B07J3GH1W1", "timestamp": 1547589356000}\n'),
    "user-item": ("user-item", "games.txt", "1 6393\n1 13504\n2 6393\n"),
}
EXPECTED_RATINGS = {"ml-100k": [3, 3, 1], "ml-dat": [5, 3, 4], "movielens-csv": [2.5, 3, 4], "amazon-2014-csv": [5, 5, 1],
                    "amazon-2018-csv": [5, 5, 1], "amazon-2023-csv": [5, 4, 3], "amazon-json": [5, 4, 1],
                    "amazon-json-literal": [5, 3, 2], "amazon-2023-json": [5, 4, 3], "user-item": None}


def write(tmp_path, name, content, gz=False):
    path = tmp_path / (name + (".gz" if gz else ""))
    data = content.encode("latin-1" if name.endswith(".dat") else "utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("fmt", list(FIXTURES))
@pytest.mark.parametrize("explicit", [False, True])
def test_every_format_reads_and_is_detected(tmp_path, fmt, explicit):
    family, name, content = FIXTURES[fmt]
    path = write(tmp_path, name, content)
    x = read_interactions(path, fmt if explicit else "auto", family)
    assert len(x) == 3
    # two users; these lines belong to the same one
    same = (0, 2) if fmt in ("ml-100k", "amazon-2014-csv", "amazon-2018-csv") else (0, 1)
    assert x.users[same[0]] == x.users[same[1]] and len(set(x.users.tolist())) == 2
    if EXPECTED_RATINGS[fmt] is None:
        assert x.ratings is None and x.times is None
    else:
        np.testing.assert_allclose(x.ratings, EXPECTED_RATINGS[fmt])
        assert (x.times // x.time_scale > 8e8).all()
    numeric = getattr(FORMATS[fmt], "int_items", False)
    assert x.item_names == sorted(x.item_names, key=int if numeric else str)  # ids in original-id order


def test_item_ids_are_the_original_ids(tmp_path):
    x = read_interactions(write(tmp_path, "r18.csv", FIXTURES["amazon-2018-csv"][2]), "auto", "amazon")
    assert [x.item_names[i] for i in x.items] == ["0001713353", "0321732944", "B000123456"]
    x = read_interactions(write(tmp_path, "r14.csv", FIXTURES["amazon-2014-csv"][2]), "auto", "amazon")
    assert [x.item_names[i] for i in x.items] == ["0132793040", "0321732944", "B000123456"]


@pytest.mark.parametrize("fmt", ["amazon-json", "amazon-json-literal", "amazon-2023-json", "movielens-csv"])
def test_gzip_files(tmp_path, fmt):
    family, name, content = FIXTURES[fmt]
    assert len(read_interactions(write(tmp_path, name, content, gz=True), "auto", family)) == 3


def test_2023_times_are_milliseconds(tmp_path):
    x = read_interactions(write(tmp_path, "r23.csv", FIXTURES["amazon-2023-csv"][2]), "auto", "amazon")
    assert x.time_scale == 1000 and x.times[0] == 1547589356557


def test_malformed_line_reports_file_line_and_text(tmp_path):
    path = write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,oops,3.0,1\n2,31,4.0,12\n")
    with pytest.raises(UserError, match=r"ratings.csv:3: malformed movielens-csv line: '1,oops,3.0,1'"):
        read_interactions(path, "auto", "movielens")


@pytest.mark.parametrize("fmt,bad", [("amazon-json", '{"reviewerID": "A1", "asin": "B1", "overall": 5.0}'),
                                     ("amazon-json", "{not json"),
                                     ("amazon-2014-csv", "A1,B2,5.0"),
                                     ("user-item", "1 2 3"),
                                     ("amazon-json-literal", "{'reviewerID': 'A1', 'asin': 'B1', 'overall': 'x', 'unixReviewTime': 1}")])
def test_skip_counts_bad_lines(tmp_path, fmt, bad):
    family, name, content = FIXTURES[fmt]
    lines = content.splitlines()
    path = write(tmp_path, name, "\n".join(lines[:2] + [bad] + lines[2:]) + "\n")
    with pytest.raises(UserError, match=rf"{name}:3: malformed"):
        read_interactions(path, fmt, family)
    x = read_interactions(path, fmt, family, on_bad_lines="skip")
    assert len(x) == 3 and x.skipped == 1


def test_missing_unknown_mismatch_binary_and_long_line(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_interactions(tmp_path / "nope.csv", "auto", "movielens")
    path = write(tmp_path, "ratings.csv", FIXTURES["movielens-csv"][2])
    with pytest.raises(UserError, match="unknown format 'parquet'"):
        read_interactions(path, "parquet", "movielens")
    with pytest.raises(UserError, match="does not match format 'ml-dat'.*looks like movielens-csv"):
        read_interactions(path, "ml-dat", "movielens")
    with pytest.raises(UserError, match='read it with dataset name = "movielens"'):
        read_interactions(path, "auto", "amazon")
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 1000)
    with pytest.raises(UserError, match="binary data"):
        read_interactions(binary, "auto", "amazon")
    one_line = tmp_path / "huge.txt"
    one_line.write_bytes(b"x" * (1 << 17))
    with pytest.raises(UserError, match="no line break"):
        read_interactions(one_line, "auto", "amazon")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        read_interactions(empty, "auto", "amazon")


def test_every_format_has_a_fixture_and_an_example_it_accepts():
    assert set(FIXTURES) == set(FORMATS)
    for fmt in FORMATS.values():
        assert fmt.line_ok(fmt.example), fmt.name


def test_detect_tells_2014_from_2018_csv():
    assert detect(FIXTURES["amazon-2014-csv"][2].splitlines(), "amazon") == "amazon-2014-csv"
    assert detect(FIXTURES["amazon-2018-csv"][2].splitlines(), "amazon") == "amazon-2018-csv"


def test_sniff_skips_blank_lines(tmp_path):
    path = write(tmp_path, "games.txt", "\n1 2\r\n\n1 3\n")
    assert sniff(path) == ["1 2", "1 3"]
    assert len(read_interactions(path, "user-item", "user-item")) == 2


def test_explicit_format_that_fits_worse_than_another_is_a_mismatch(tmp_path):
    path = write(tmp_path, "r23.csv", FIXTURES["amazon-2023-csv"][2])
    with pytest.raises(UserError, match="does not match format 'amazon-2014-csv'.*looks like amazon-2023-csv"):
        read_interactions(path, "amazon-2014-csv", "amazon")


def test_truncated_gzip_is_one_line(tmp_path):
    family, name, content = FIXTURES["amazon-json"]
    whole = gzip.compress((content * 200).encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="cut.json.gz: cannot read it"):
        read_interactions(path, "auto", family)


def test_python_literal_lines_with_unknown_escapes_parse_without_warnings():
    # Review text like "C:\pictures" is an unknown escape to Python's parser; the line-by-line
    # scan of a damaged 2014 file must not warn once per such line.
    line = "{'reviewerID': 'A1', 'asin': 'B1', 'overall': 5.0, 'unixReviewTime': 1, 'reviewText': 'C:\\pictures'}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = FORMATS["amazon-json-literal"].parse_line(line)
    assert parsed == {"user": "A1", "item": "B1", "rating": 5.0, "time": 1}

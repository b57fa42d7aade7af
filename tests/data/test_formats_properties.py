"""Property-based: for every format, random and mangled input gives a UserError or a counted skip, nothing else."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recengine.data.formats import FORMATS, read_interactions
from recengine.errors import UserError

from tests.data.test_formats import FIXTURES

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
line_text = st.text(alphabet=string.printable.replace("\n", "").replace("\r", "") + "é'\"{}:,\t", max_size=60)


def mangle(line: str, data) -> str:
    """One random edit of a valid line: cut, insert, replace or duplicate a piece."""
    if not line:
        return line
    i = data.draw(st.integers(0, len(line) - 1))
    j = data.draw(st.integers(i, len(line)))
    piece = data.draw(line_text)
    return data.draw(st.sampled_from([line[:i], line[:i] + piece + line[j:], line + line[i:j], piece]))


def check(path, fmt, family, n_lines):
    for mode in ("error", "skip"):
        try:
            x = read_interactions(path, fmt, family, on_bad_lines=mode)
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc)
            continue
        assert len(x) + x.skipped <= n_lines
        assert len(x.users) == len(x.items) and (x.items < max(len(x.item_names), 1)).all()
        if mode == "error":
            assert x.skipped == 0


@SETTINGS
@given(data=st.data())
def test_mangled_lines_of_every_format(tmp_path_factory, data):
    fmt = data.draw(st.sampled_from(sorted(FORMATS)))
    family, name, content = FIXTURES[fmt]
    lines = content.splitlines()
    lines = [mangle(line, data) if data.draw(st.booleans()) else line for line in lines * data.draw(st.integers(1, 3))]
    path = tmp_path_factory.mktemp("p") / name
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    check(path, data.draw(st.sampled_from([fmt, "auto"])), family, len(lines))


@SETTINGS
@given(blob=st.binary(max_size=400), fmt=st.sampled_from(["auto"] + sorted(FORMATS)),
       family=st.sampled_from(["movielens", "amazon", "user-item"]))
def test_random_bytes(tmp_path_factory, blob, fmt, family):
    path = tmp_path_factory.mktemp("b") / "random.txt"
    path.write_bytes(blob)
    check(path, fmt, family, blob.count(b"\n") + 1)


@SETTINGS
@given(lines=st.lists(line_text, min_size=1, max_size=8), fmt=st.sampled_from(["auto"] + sorted(FORMATS)))
def test_random_text_lines(tmp_path_factory, lines, fmt):
    path = tmp_path_factory.mktemp("t") / "random.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    family = FORMATS[fmt].family if fmt != "auto" else "amazon"
    check(path, fmt, family, len(lines))

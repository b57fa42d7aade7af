import os

import numpy as np
import pytest

from recengine.data import cache
from recengine.data.loading import FileDatasetOptions, load_file_dataset
from recengine.errors import UserError
from recengine_plugins.amazon import AmazonOptions
from recengine_plugins.user_item import UserItemOptions

CSV = "A1,B01,5.0,100\nA1,B02,4.0,200\nA2,B01,3.0,150\nA1,B03,5.0,300\n"


def options(tmp_path, **kw):
    path = tmp_path / "r.csv"
    if not path.exists():
        path.write_text(CSV)
    return AmazonOptions(path=str(path), **{"cache_dir": str(tmp_path / "cache"), **kw})


def test_cache_round_trip_and_hit(tmp_path):
    ds, meta = load_file_dataset(options(tmp_path))
    assert not meta["cache_hit"] and ds.sequences.to_lists() == [[1, 2, 3], [1]]
    again, meta2 = load_file_dataset(options(tmp_path))
    assert meta2["cache_hit"] and meta2["cache"] == meta["cache"]
    assert again.sequences.to_lists() == ds.sequences.to_lists() and again.item_ids == ["", "B01", "B02", "B03"]
    np.testing.assert_array_equal(again.timestamps, ds.timestamps)
    files = sorted(p.name for p in (tmp_path / "cache").glob("*/*"))
    assert files == ["item_ids.json", "items.npy", "meta.json", "offsets.npy", "timestamps.npy"]
    for npy in (tmp_path / "cache").glob("*/*.npy"):
        np.load(npy, allow_pickle=False)  # plain arrays: loadable without pickle


def test_changed_option_or_file_rebuilds(tmp_path):
    _, first = load_file_dataset(options(tmp_path))
    _, other = load_file_dataset(options(tmp_path, min_rating=4))
    assert not other["cache_hit"] and other["cache"] != first["cache"]
    path = tmp_path / "r.csv"
    stat = path.stat()
    path.write_text(CSV.replace("B03", "B04"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and same mtime: only the content hash differs
    ds, changed = load_file_dataset(options(tmp_path))
    assert not changed["cache_hit"] and ds.item_ids[-1] == "B04"


def test_cache_can_be_disabled_and_damage_is_reported(tmp_path):
    _, meta = load_file_dataset(options(tmp_path, cache_dir=""))
    assert meta["cache"] is None
    _, meta = load_file_dataset(options(tmp_path))
    (tmp_path / "cache" / meta["cache"].split("/")[-1] / "items.npy").write_bytes(b"junk")
    with pytest.raises(UserError, match="damaged cache entry"):
        load_file_dataset(options(tmp_path))


def test_options_check_the_format_name_of_their_family():
    with pytest.raises(ValueError, match="unknown format 'ml-dat'"):
        UserItemOptions(path="x", format="ml-dat")
    assert FileDatasetOptions(path="x", format="ml-dat").format == "ml-dat"


def test_cache_key_changes_with_every_part():
    ident = {"size": 1, "mtime_ns": 2, "sha1": "ab"}
    base = cache.cache_key(ident, {"k_core": 5})
    assert base != cache.cache_key({**ident, "sha1": "ac"}, {"k_core": 5})
    assert base != cache.cache_key({**ident, "size": 2}, {"k_core": 5})
    assert base != cache.cache_key(ident, {"k_core": 4})


def test_a_build_that_loses_the_rename_race_keeps_the_winner(tmp_path, monkeypatch):
    # Runs started side by side on one file (an accuracy batch) each build the same entry. Here
    # another run's entry lands between this build's check and its rename, which then fails
    # (the target is a non-empty folder): the build must keep the winner's entry, not crash.
    (tmp_path / "r.csv").write_text(CSV)
    dataset, _ = load_file_dataset(options(tmp_path, cache_dir=""))
    entry = tmp_path / "cache" / "r-key"
    real_replace = os.replace

    def replace_after_the_other_run(src, dst):
        monkeypatch.setattr(cache.os, "replace", real_replace)
        cache.save(entry, dataset, {"build": "other"})  # the other run wins
        real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", replace_after_the_other_run)
    cache.save(entry, dataset, {"build": "this"})
    loaded, meta = cache.load(entry)
    assert meta["build"] == "other" and loaded.sequences.to_lists() == dataset.sequences.to_lists()
    assert [p.name for p in entry.parent.iterdir()] == ["r-key"]  # no temporary folder left behind


def test_an_existing_complete_entry_is_kept(tmp_path):
    (tmp_path / "r.csv").write_text(CSV)
    dataset, _ = load_file_dataset(options(tmp_path, cache_dir=""))
    entry = tmp_path / "cache" / "r-key"
    cache.save(entry, dataset, {"build": 1})
    cache.save(entry, dataset, {"build": 2})  # a second run that lost the race
    assert cache.load(entry)[1]["build"] == 1 and len(list(entry.parent.iterdir())) == 1

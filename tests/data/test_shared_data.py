"""Optional integration test over the real files in ../shared/data; skipped when the folder is absent."""

import os
from pathlib import Path

import pytest

from recengine.data.loading import load_file_dataset
from recengine_plugins.amazon import AmazonOptions
from recengine_plugins.movielens import MovieLensOptions
from recengine_plugins.user_item import UserItemOptions

SHARED = Path(os.environ.get("RECENGINE_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")  # the project's machines keep it here
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent (real files are not in the repository)")

# file -> (options class, users, items, interactions) with no filtering, as its README says
CASES = {
    "amazon-video-games.txt": (UserItemOptions, 31_013, 23_715, 287_107),
    "ml-latest-small-ratings.csv": (MovieLensOptions, 610, 9_724, 100_836),
    "amazon2018-All_Beauty_5.json": (AmazonOptions, 991, 85, 5_269),
    "amazon2023-All_Beauty-5core.csv": (AmazonOptions, 253, 356, 2_535),
    # README: "50,697 rows"; the file holds 50,698 lines, all data (no header).
    "amazon2014-ratings_Electronics-head50697.csv": (AmazonOptions, None, None, 50_698),
}


@pytest.mark.parametrize("name", list(CASES))
def test_readme_counts(name):
    cls, users, items, interactions = CASES[name]
    ds, _ = load_file_dataset(cls(path=str(SHARED / name), cache_dir=""))
    seqs = ds.sequences
    assert len(seqs.items) == interactions
    if users is not None:
        assert (seqs.num_users, ds.num_items) == (users, items)


def test_video_games_short_users_and_beauty_duplicates():
    ds, _ = load_file_dataset(UserItemOptions(path=str(SHARED / "amazon-video-games.txt"), cache_dir=""))
    assert (ds.sequences.lengths < 5).sum() == 1_672
    assert abs(ds.sequences.lengths.mean() - 9.26) < 0.01
    ds, _ = load_file_dataset(AmazonOptions(path=str(SHARED / "amazon2018-All_Beauty_5.json"), duplicates="first", cache_dir=""))
    assert len(ds.sequences.items) == 5_269 - 1_177

"""Dataset `movielens`: MovieLens ratings (u.data, ratings.dat, ratings.csv) as chronological sequences.

Item ids in `recommend` are the original movieIds. See docs/datasets.md for the formats.
"""

from __future__ import annotations

from recengine.data.loading import FileDatasetOptions, load_file_dataset
from recengine.hookspecs import hookimpl


class MovieLensOptions(FileDatasetOptions):
    FAMILY = "movielens"


@hookimpl
def register_datasets(register):
    register("movielens", lambda options: load_file_dataset(options)[0], options=MovieLensOptions)

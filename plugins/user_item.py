"""Dataset `user-item`: the preprocessed "user item" text published with SASRec and BERT4Rec.

One interaction per line, users' lines in chronological order; there are no ratings or
times, so file order is the order. Item ids in `recommend` are the file's item numbers.
"""

from __future__ import annotations

from recengine.data.loading import FileDatasetOptions, load_file_dataset
from recengine.hookspecs import hookimpl


class UserItemOptions(FileDatasetOptions):
    FAMILY = "user-item"


@hookimpl
def register_datasets(register):
    register("user-item", lambda options: load_file_dataset(options)[0], options=UserItemOptions)

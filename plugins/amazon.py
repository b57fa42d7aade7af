"""Dataset `amazon`: Amazon review and rating files of 2014, 2018 and 2023 as chronological sequences.

Ratings-only CSVs and review JSON lines (plain or .gz, strict JSON or the Python literals of
some 2014 files). Item ids in `recommend` are the original ASINs. See docs/datasets.md.
"""

from __future__ import annotations

from recengine.data.loading import FileDatasetOptions, load_file_dataset
from recengine.hookspecs import hookimpl


class AmazonOptions(FileDatasetOptions):
    FAMILY = "amazon"


@hookimpl
def register_datasets(register):
    register("amazon", lambda options: load_file_dataset(options)[0], options=AmazonOptions)

"""Data core: compact user sequences, splits and vectorised batching."""

from recengine.data.sequences import PAD, Dataset, Sequences
from recengine.data.split import EvalSet, LeaveOneOut, leave_one_out

__all__ = ["PAD", "Dataset", "EvalSet", "LeaveOneOut", "Sequences", "leave_one_out"]

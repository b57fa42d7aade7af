"""The torchrun wrapper's one line for a failed job (recengine/cli/torchrun.py)."""

import signal

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from recengine.cli.torchrun import failure_line


def _failed(**codes):
    return ChildFailedError("recengine", {int(rank[1:]): ProcessFailure(int(rank[1:]), 100 + int(rank[1:]), code, "<N/A>")
                                          for rank, code in codes.items()})


def test_ranks_that_exited_with_an_error_are_named_and_those_torchrun_stopped_are_not():
    assert failure_line(_failed(r0=1, r1=1)) == "ranks 0, 1 failed (exit code 1); their messages are above"
    assert failure_line(_failed(r0=-signal.SIGTERM, r1=1)) == "rank 1 failed (exit code 1); its message is above"


def test_a_killed_rank_is_named_with_its_signal():
    assert failure_line(_failed(r0=-signal.SIGTERM, r1=-signal.SIGKILL)) == "rank 1 was killed by SIGKILL (out of memory?)"
    assert failure_line(_failed(r0=-signal.SIGTERM)) == "rank 0 was killed by SIGTERM"

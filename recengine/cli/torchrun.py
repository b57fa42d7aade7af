"""`python -m recengine.cli.torchrun ARGS...`: PyTorch's torchrun, whose failure is one line.

`recengine train --nproc N` runs this in place of `python -m torch.distributed.run`. When a
worker exits non-zero, torchrun raises ChildFailedError with a traceback; for a user's mistake
every worker has already printed its one-line error, so the traceback only buries it. The exit
code stays torchrun's (1); Ctrl-C exits 130, as the other commands do."""

from __future__ import annotations

import signal
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main


def failure_line(exc: ChildFailedError) -> str:
    """Which processes failed and how. Processes torchrun stopped itself (SIGTERM) once another failed are left out."""
    failures = {rank: f for rank, f in exc.failures.items() if f.exitcode != -signal.SIGTERM} or exc.failures
    killed = [(rank, f) for rank, f in failures.items() if f.exitcode < 0]
    if killed:  # a signal leaves no message of its own: say which one
        rank, f = killed[0]
        return f"rank {rank} was killed by {f.signal_name()}" + (" (out of memory?)" if f.exitcode == -signal.SIGKILL else "")
    ranks = sorted(failures)
    codes = ", ".join(sorted({str(f.exitcode) for f in failures.values()}))
    if len(ranks) == 1:
        return f"rank {ranks[0]} failed (exit code {codes}); its message is above"
    return f"ranks {', '.join(map(str, ranks))} failed (exit code {codes}); their messages are above"


def launch() -> None:
    try:
        main()
    except ChildFailedError as exc:
        print(f"error: {failure_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, SignalException):
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    launch()

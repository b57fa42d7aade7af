"""`python -m recengine.cli.torchrun ARGS...`: PyTorch's torchrun, whose failure is one line.

`recengine train --nproc N` runs this in place of `python -m torch.distributed.run`. When a
worker exits non-zero, torchrun raises ChildFailedError with a traceback; for a user's mistake
every worker has already printed its one-line error, so the traceback only buries it."""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main


def launch() -> None:
    try:
        main()
    except ChildFailedError as exc:
        codes = sorted({failure.exitcode for failure in exc.failures.values()})
        print(f"error: {len(exc.failures)} of the torchrun processes failed (exit code {', '.join(map(str, codes))}); "
              "their own messages are above", file=sys.stderr)
        sys.exit(next((code for code in codes if code > 0), 1))


if __name__ == "__main__":
    launch()

"""A torchrun worker for tests/test_scale.py: ``posecli train ARGS``, except that on torchrun's first
attempt (TORCHELASTIC_RESTART_COUNT 0) the rank named by POSECLI_TEST_FAULT_RANK ends itself with
os._exit(3) before optimiser step POSECLI_TEST_FAULT_ITERATION + 1, as a crashed worker would: no
cleanup, no exception, its peers left waiting in a collective until torchrun stops them.
"""

from __future__ import annotations

import os
import sys

from posecli.cli import app
from posecli.engine import train as engine


def main() -> None:
    rank, attempt = int(os.environ["RANK"]), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    fault_rank, fault_iteration = int(os.environ["POSECLI_TEST_FAULT_RANK"]), int(os.environ["POSECLI_TEST_FAULT_ITERATION"])
    step = engine.train_step

    def step_or_die(r, parts, lr):
        if attempt == 0 and rank == fault_rank and r.state.iteration == fault_iteration:
            os._exit(3)
        return step(r, parts, lr)

    engine.train_step = step_or_die  # train() looks the step up when it starts
    app(["train", *sys.argv[1:]], prog_name="posecli")


if __name__ == "__main__":
    main()

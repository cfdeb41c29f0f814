"""TensorBoard event files under the run directory, continuing across requeues and resumes.

Each attempt opens a new event file in `<run_dir>/tensorboard/` (TensorBoard reads all the
files of a directory as one run) with `purge_step` = the resumed checkpoint's global step
+ 1: TensorBoard then discards whatever an earlier attempt wrote for later steps (those an
attempt killed without warning trained past its last checkpoint, and this one trains
again), so each step appears once. Everything up to a checkpoint's step is flushed to
disk before the checkpoint is written, so nothing a resumed run will not redo is lost.
Only rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path

from train.contract import TENSORBOARD_DIR, SpecError, rundir


class Board:
    """Scalars to TensorBoard: `scalar(tag, value, step)`; `flush()` before a checkpoint."""

    def __init__(self, run_dir: Path, resumed_step: int | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SpecError("train.tensorboard", "is true but the tensorboard package is not installed in the job's "
                                                 "Python: pip install -e '.[tensorboard]'") from None
        purge = resumed_step + 1 if resumed_step is not None else None
        folder = rundir.check_dir(run_dir, TENSORBOARD_DIR, create=True)  # a link out of the run: RunFileError
        self.writer = SummaryWriter(str(folder), purge_step=purge, flush_secs=60)

    def scalar(self, tag: str, value: float | None, step: int) -> None:
        if value is not None:
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

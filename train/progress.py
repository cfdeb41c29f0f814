"""Progress output: a live bar on a terminal, plain lines at a bounded rate in batch logs.

A batch job's stdout is a file; a carriage-return progress bar there becomes megabytes of
one unreadable line. So the bar is drawn only when stdout is a terminal, and otherwise a
plain line is printed at most every `log_interval` seconds (and at every epoch end).
progress.json in the run directory is rewritten at the same bounded rate for `cluster
status`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from train import runfiles
from train.contract import append_attempt_event


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Reports the position in training; call `step` after every optimizer step."""

    def __init__(
        self,
        run_dir: str | Path,
        epochs: int,
        steps_per_epoch: int,
        stream: TextIO | None = None,
        *,
        log_interval: float = 10.0,
        bar_interval: float = 0.1,
        primary: bool = True,
    ) -> None:
        """primary=False (a data-parallel rank other than 0): only `message` prints;
        progress lines and progress.json are rank 0's."""
        self.primary = primary
        self.run_dir = Path(run_dir)
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = bar_interval if self.tty else log_interval
        self.log_interval = log_interval
        self._next_print = 0.0
        self._next_file = 0.0
        self._bar_shown = False
        self._window_start = time.monotonic()
        self._window_samples = 0
        self._window_steps = 0
        self._first_step_noted = False

    def start_epoch(self) -> None:
        self._window_start = time.monotonic()
        self._window_samples = 0
        self._window_steps = 0

    def step(self, epoch: int, step: int, global_step: int, samples: int, loss: Callable[[], float]) -> None:
        """`epoch` is 0-based and `step` the number of steps done in it; `loss` is only
        called when a line is printed (reading it synchronises with a GPU)."""
        if not self.primary:
            return
        self._window_samples += samples
        self._window_steps += 1
        if not self._first_step_noted:  # how long this attempt took to train at all (cluster report)
            self._first_step_noted = True
            self.note_event("first_step", global_step)
        now = time.monotonic()
        if now >= self._next_file:
            self._next_file = now + self.log_interval
            self.write_file(epoch, step, global_step)
        if now < self._next_print:
            return
        self._next_print = now + self.interval
        elapsed = max(now - self._window_start, 1e-9)
        rate = self._window_samples / elapsed
        remaining = (self.epochs - epoch) * self.steps_per_epoch - step
        eta = remaining * elapsed / self._window_steps
        line = (
            f"epoch {epoch + 1}/{self.epochs} step {step}/{self.steps_per_epoch} "
            f"loss {loss():.4f} {rate:.0f} samples/s eta {_duration(eta)}"
        )
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self._bar_shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def write_file(self, epoch: int, step: int, global_step: int) -> None:
        if not self.primary:
            return
        runfiles.write_json_atomic(
            self.run_dir / runfiles.PROGRESS_FILE,
            {
                "epoch": epoch,
                "step": step,
                "epochs": self.epochs,
                "steps_per_epoch": self.steps_per_epoch,
                "global_step": global_step,
                "time": time.time(),
            },
            durable=False,  # only a live view; losing it to a crash costs nothing
        )

    def note_event(self, event: str, global_step: int, **fields: object) -> None:
        """Record an event of this attempt in attempts.jsonl (rank 0 only)."""
        if self.primary:
            append_attempt_event(self.run_dir, event, global_step, **fields)

    def message(self, text: str) -> None:
        """A line that stays (epoch results, resume and stop notices)."""
        if self._bar_shown:
            self.stream.write("\r\x1b[K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        # After an epoch line the next plain progress line can wait a full interval.
        self._next_print = time.monotonic() + self.interval

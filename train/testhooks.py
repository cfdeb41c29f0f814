"""Test-only: freeze the trainer at a named phase, so a test can kill it exactly there.

Off unless ``CLUSTER_TRAIN_TEST_PAUSE_AT`` is set; never set it in a real job.

    CLUSTER_TRAIN_TEST_PAUSE_AT=validation      # the first time the trainer reaches it
    CLUSTER_TRAIN_TEST_PAUSE_AT=validation@3    # the third time (1-based), in this process

At that point the thread that reached it sends itself SIGSTOP, which stops the whole
process: that thread exactly there, the others (the checkpoint writer, or the training
loop) wherever they are a moment later. The test then sends SIGKILL (a crash there), or SIGTERM /
SIGUSR2 followed by SIGCONT (a stop request arriving there). See `PHASES`, and
tests/train/test_stop_anywhere.py.
"""

from __future__ import annotations

import os
import signal
import threading

PAUSE_ENV = "CLUSTER_TRAIN_TEST_PAUSE_AT"

PHASES = (
    "setup",             # the run lock held, nothing read or written yet
    "resume",            # the checkpoint loaded, metrics.jsonl not yet reconciled
    "validation",        # an epoch's steps done, its validation pass about to run
    "metrics",           # the epoch's metrics line appended, its checkpoint not yet written
    "checkpoint-file",   # (writer thread) a checkpoint's .pt in place, its sidecar not yet
    "checkpoint-rotate", # (writer thread) the sidecar written, older checkpoints not yet deleted
    "rotate-unlink",     # (writer thread) rotation: an old checkpoint's sidecar deleted, its .pt not yet
    "best-link",         # (writer thread) an improved epoch's checkpoint complete, best.pt not yet linked
    "summary",           # all epochs done, final.pt and summary.json not yet written
    "summary-written",   # summary.json written, the process about to return
)

_reached: dict[str, int] = {}


def pause_at(phase: str) -> None:
    """SIGSTOP this process if $CLUSTER_TRAIN_TEST_PAUSE_AT names `phase` (and this is the
    occurrence it names); otherwise nothing."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name != phase:
        return
    _reached[phase] = _reached.get(phase, 0) + 1
    if _reached[phase] == (int(nth) if nth.isdigit() else 1):
        # Sent to this thread: it stops before it returns from the call (the other threads
        # a moment later). os.kill(getpid()) may be taken by another thread, and this one
        # would run on past the phase meanwhile.
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)

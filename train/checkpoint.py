"""Writing, rotating and loading checkpoints: complete or invisible, never unpickled code.

A checkpoint is one `torch.save` of a dict of tensors and plain values (loaded back with
`weights_only=True`, which refuses anything that would run code), written atomically,
then made visible by its JSON sidecar (see `train.runfiles`).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from train import runfiles
from train.testhooks import pause_at

FORMAT = 1
"""Version of the checkpoint layout; a different one is refused rather than misread."""


class IncompatibleCheckpoint(Exception):
    """The run directory's checkpoint was made with a different model, data or sampling."""


class UnsafeCheckpoint(Exception):
    """A checkpoint, intact by its sidecar, that `torch.load(weights_only=True)` refuses:
    it holds pickled objects beyond tensors and plain values, i.e. code that unpickling
    would run. Not set aside like a damaged one: someone put it there, and the user decides."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: not a tensors-only checkpoint (refused to unpickle code); "
                         "delete it or restore it from a backup")

    def __reduce__(self) -> tuple:
        return type(self), (self.path,)


def _load(path: str | Path) -> Any:
    """torch.load of a checkpoint, tensors and plain values only (never runs pickled code).

    torch's refusal says that loading with weights_only=False "will likely succeed": wrong
    advice for a file that may be malicious, so it becomes an `UnsafeCheckpoint`.
    """
    try:
        # Opened without following a link (verify checked this very file's size and CRC).
        with runfiles.rundir.open_file(Path(path).parent, Path(path).name, "rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if str(err).startswith("Weights only load failed"):
            raise UnsafeCheckpoint(path) from None
        raise


@contextlib.contextmanager
def _without_torch_crc32():
    # torch.save computes a CRC-32 per record that torch.load never checks; the sidecar's
    # CRC-32 over the whole file does that job, so skipping these halves the save time.
    serialization = torch.serialization
    if not hasattr(serialization, "set_crc32_options"):  # torch < 2.6 always computes them
        yield
        return
    previous = serialization.get_crc32_options()
    serialization.set_crc32_options(False)
    try:
        yield
    finally:
        serialization.set_crc32_options(previous)


def on_cpu(value: Any) -> Any:
    """`value` with every tensor in it (nested in dicts, lists, tuples) moved to the CPU.

    torch.save tags each tensor with its device, and torch.load without `map_location`
    refuses a cuda-tagged one on a machine without CUDA: a checkpoint saved from the CPU
    copies loads anywhere, and resuming puts each tensor back on the run's device
    (`load_state_dict` copies into the model's and optimizer's own tensors).
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


def serialize(state: dict[str, Any], position: dict[str, int]) -> bytes:
    """The bytes of a checkpoint: `torch.save` of the state plus format and position.

    Serialising copies every tensor (from a GPU to the CPU first, see `on_cpu`), so the
    bytes are a snapshot: training may change the tensors as soon as this returns.
    """
    buffer = io.BytesIO()
    with _without_torch_crc32():
        torch.save(on_cpu({"format": FORMAT, "position": position, **state}), buffer)
    return buffer.getvalue()


def write(run_dir: str | Path, data: bytes, *, position: dict[str, int], reason: str, keep: int) -> dict:
    """Write serialised checkpoint bytes for `position`, then delete all but the newest `keep`.

    Returns the sidecar dict, with "path" and "seconds" (the time the write took) added.
    """
    start = time.perf_counter()
    directory = runfiles.folder(run_dir, runfiles.CHECKPOINT_DIR)  # never a link out of the run
    name = runfiles.checkpoint_name(position["global_step"])
    runfiles.write_atomic(directory / name, data)
    pause_at("checkpoint-file")
    sidecar = {
        "format": FORMAT,
        **position,
        "file": name,
        "bytes": len(data),
        "crc32": zlib.crc32(data),
        "reason": reason,
        "time": time.time(),
    }
    # Only now, with the .pt complete and durable, does the checkpoint become visible.
    runfiles.write_json_atomic(directory / name.replace(".pt", ".json"), sidecar)
    pause_at("checkpoint-rotate")
    rotate(run_dir, keep)
    sidecar["path"] = str(directory / name)
    sidecar["seconds"] = time.perf_counter() - start
    return sidecar


class CheckpointWriter:
    """Writes checkpoints on a background thread, one at a time.

    The training loop pays only for serialising the state into memory (about 1 ms for
    this model); the file writes, fsyncs and rotation (several ms, mostly waiting for the
    disk) overlap with the next steps. `submit` first waits for the previous write, so at
    most one is in flight and they complete in order. A failed write raises from the next
    `submit` or `wait`.
    """

    def __init__(self, run_dir: str | Path, keep: int) -> None:
        self.run_dir = Path(run_dir)
        self.keep = keep
        self.write_seconds = 0.0
        """Total time spent writing (on the background thread)."""
        self.longest_write = 0.0
        """Longest serialise-and-write time, for the deadline margin."""
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last: dict | None = None

    def submit(
        self,
        state: dict[str, Any],
        *,
        position: dict[str, int],
        reason: str,
        then: Callable[[dict], None] | None = None,
    ) -> str:
        """Snapshot `state` and start writing it; return the path it will have.

        `then(sidecar)` runs on the writer thread once the checkpoint is complete.
        """
        self.wait()
        start = time.perf_counter()
        data = serialize(state, position)
        serialize_seconds = time.perf_counter() - start

        def write_in_background() -> None:
            try:
                info = write(self.run_dir, data, position=position, reason=reason, keep=self.keep)
                if then is not None:
                    then(info)
                self.write_seconds += info["seconds"]
                self.longest_write = max(self.longest_write, serialize_seconds + info["seconds"])
                self._last = info
            except BaseException as err:  # re-raised on the training thread
                self._error = err

        self._thread = threading.Thread(target=write_in_background, name="checkpoint-writer")
        self._thread.start()
        return str(self.run_dir / runfiles.CHECKPOINT_DIR / runfiles.checkpoint_name(position["global_step"]))

    def wait(self) -> dict | None:
        """Block until the write in flight (if any) is complete; its sidecar, or None."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._last


def rotate(run_dir: str | Path, keep: int) -> None:
    """Delete all complete checkpoints but the newest `keep` (best.pt/final.pt are links
    of their own and stay)."""
    for info in runfiles.sidecars(run_dir)[keep:]:
        # Sidecar first: a checkpoint without one is invisible, never half-deleted.
        Path(info["sidecar"]).unlink(missing_ok=True)
        pause_at("rotate-unlink")
        Path(info["path"]).unlink(missing_ok=True)


def remove_orphans(run_dir: str | Path) -> None:
    """Delete checkpoint files without a sidecar: a write killed before its sidecar, or a
    rotation killed between deleting a sidecar and its checkpoint. Never loaded, they
    would otherwise stay for good (megabytes each). Only while no writer is at work."""
    try:
        directory = runfiles.rundir.check_dir(run_dir, runfiles.CHECKPOINT_DIR)  # a link: RunFileError
    except FileNotFoundError:
        return
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if runfiles.CHECKPOINT_FILE.fullmatch(e.name)]
    for name in names:
        path = directory / name
        if not os.path.lexists(path.with_suffix(".json")):
            path.unlink(missing_ok=True)  # removes the entry itself, never what a link names


def _set_aside(info: dict) -> None:
    """Rename a bad checkpoint out of the way (kept for inspection, never loaded again)."""
    Path(info["sidecar"]).unlink(missing_ok=True)
    path = Path(info["path"])
    if os.path.lexists(path):  # renames the entry itself, a link included
        os.replace(path, path.with_name(path.name + ".corrupt"))


def load_latest(run_dir: str | Path, warn: Callable[[str], None]) -> tuple[dict, dict] | None:
    """(state, sidecar) of the newest checkpoint that loads, or None if there is none.

    A checkpoint that is missing, truncated, altered or unloadable is reported through
    `warn`, renamed to `*.corrupt`, and the one before it is tried. One that would unpickle
    code raises `UnsafeCheckpoint`.
    """
    for info in runfiles.sidecars(run_dir):
        name = Path(info["path"]).name
        problem = runfiles.verify(info)
        state = None
        if problem is None:
            try:
                state = _load(info["path"])
                if not isinstance(state, dict) or state.get("format") != FORMAT:
                    problem = f"not a checkpoint of format {FORMAT}"
            except UnsafeCheckpoint:
                raise
            except Exception as err:  # torch raises many types for a damaged file
                problem = f"cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        if problem is None:
            return state, info
        warn(f"checkpoint {name} is unusable: {problem}; set aside as {name}.corrupt, trying the previous one")
        _set_aside(info)
    return None


def load_step(run_dir: str | Path, global_step: int) -> tuple[dict, dict]:
    """(state, sidecar) of the checkpoint of `global_step`, which rank 0's `load_latest`
    chose and checked: the other ranks of a data-parallel run load exactly that one."""
    for info in runfiles.sidecars(run_dir):
        if int(info["global_step"]) == global_step:
            return _load(info["path"]), info
    raise FileNotFoundError(f"no checkpoint of global step {global_step} in {Path(run_dir) / runfiles.CHECKPOINT_DIR}")


def first_difference(saved: Any, current: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key at which two nested dicts differ: (key, saved, current)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        # In the current dict's order: the identity lists the config keys before the data
        # fingerprint, so a changed setting is named rather than just "different data".
        for k in list(current) + [k for k in saved if k not in current]:
            diff = first_difference(saved.get(k), current.get(k), f"{key}.{k}" if key else str(k))
            if diff:
                return diff
        return None
    return None if saved == current else (key, saved, current)


def check_compatible(saved_identity: dict, identity: dict, path: str) -> None:
    """Refuse to resume when what the checkpoint was trained on differs from the config.

    The model's shape, the data, the seed, the batch size and the sampling all determine
    what the saved position and optimizer state mean; epochs, lr, device, threads and the
    checkpoint schedule may change between attempts.
    """
    diff = first_difference(saved_identity, identity)
    if diff is None:
        return
    key, old, new = diff
    raise IncompatibleCheckpoint(
        f"cannot resume from {path}: {key} differs (checkpoint: {old}, now: {new}). Use a new --run-dir, "
        "or restore the setting; only epochs, lr, device, threads and checkpoint settings may change on resume"
    )

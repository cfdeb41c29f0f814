"""The probe process of :mod:`train.contract.task_probe`, from the login node's side: start it,
ask it to validate options, read its answers, end it and everything it started (its other side
is :mod:`train.contract.task_probe_child`). Standard library only.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from train.contract import SpecError
from train.contract.task import CheckedOptions

TIMEOUT_ENV = "CLUSTER_TASK_IMPORT_TIMEOUT"
DEFAULT_TIMEOUT = 20.0
_CHILD = ("import sys; del sys.path[0]; import json; sys.path[:] = json.loads(sys.argv[1]); "
          "from train.contract.task_probe_child import main; main(sys.argv[2], sys.argv[3])")
"""The subprocess: the current directory (Python's first entry for ``-c``) goes before anything
is imported; then this process's path (see `train.contract.task_probe_child`)."""


def timeout_seconds() -> float:
    """The time bound of an import or a validation: `CLUSTER_TASK_IMPORT_TIMEOUT`, default 20 s."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


class TaskProbe:
    """One task module, imported in its subprocess; validates options there on request."""

    def __init__(self, ref: str, key: str) -> None:
        self.ref, self.key = ref, key
        self.module = ref.partition(":")[0]
        self.lock = threading.Lock()
        self.answers: dict[tuple[str, str], Any] = {}
        self.failure: SpecError | None = None
        self.buffer = b""
        # This process's import path, less the entry Python put first for `-c`/`-m` (the
        # current directory): the child must not find a module of the submit directory first.
        path = list(sys.path)
        if path and path[0] in ("", os.getcwd()):
            del path[0]
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(path), ref, key], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as err:
            raise SpecError(key, f"cannot start {sys.executable} to import {self.module!r} ({err})") from None
        self.failure = self._answer_of(self._read(), "import")
        if self.failure is not None:
            self.close()

    def options(self, given: Any, prefix: str) -> CheckedOptions | None:
        """The task's validated options, or the one-line `SpecError` the task's rules give."""
        if self.failure is not None:
            raise self.failure
        try:
            text = json.dumps(given, sort_keys=True, allow_nan=True)
        except (TypeError, ValueError):
            raise SpecError(prefix, "holds a value that is not a number, string, boolean, null, list or "
                            "mapping") from None
        with self.lock:
            if (text, prefix) not in self.answers:
                self.answers[(text, prefix)] = self._ask(text, prefix)
        answer = self.answers[(text, prefix)]
        if isinstance(answer, SpecError):
            raise answer
        return answer

    def _ask(self, text: str, prefix: str) -> CheckedOptions | None | SpecError:
        try:
            self.process.stdin.write(json.dumps({"options": text, "prefix": prefix}).encode() + b"\n")
            self.process.stdin.flush()
        except OSError:
            pass  # it ended: _read says how
        message = self._read()
        problem = self._answer_of(message, "validation")
        if problem is not None:
            if not isinstance(message, dict) or "error" not in message:
                self.failure = problem  # the process is gone or hung: nothing more to ask it
                self.close()
            return problem
        values = message["options"]
        return None if values is None else CheckedOptions(self.ref, tuple((k, _frozen(v)) for k, v in values.items()))

    def _answer_of(self, message: Any, stage: str) -> SpecError | None:
        """None for a good answer; else the one-line problem (and the process is to be closed)."""
        if message == "timeout":
            bound = timeout_seconds()
            what = f"importing {self.module!r}" if stage == "import" else f"validating {self.ref}'s options"
            return SpecError(self.key, f"{what} took more than {bound:g} s (a task module must not do work or wait "
                             f"when imported; {TIMEOUT_ENV} sets the bound)")
        if message is None:  # the subprocess ended without answering: os._exit, a crash
            status = self._wait(2.0)
            how = "" if status is None else f" (exit status {status})"
            return SpecError(self.key, f"importing {self.module!r} ended its process{how} during the {stage} "
                             "(a task module must not exit when imported)")
        if "error" in message:
            key, text = message["error"]
            return SpecError(key, text)
        return None

    def _read(self) -> dict | str | None:
        """The next JSON line from the subprocess; None at its end, "timeout" after the bound."""
        deadline = time.monotonic() + timeout_seconds()
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                return "timeout"
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            return None

    def _wait(self, seconds: float) -> int | None:
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            return None

    def close(self, wait: bool = True) -> None:
        """End the subprocess and everything it started: its reaper kills what is left when the
        import process ends (here, at once: its requests end); then the process group, to be sure.
        ``wait=False`` (at exit, for a probe that started nothing) leaves that to the reaper."""
        if self.process.poll() is not None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        if not wait:
            return
        if self._wait(0.5) is None:
            try:
                self.process.send_signal(signal.SIGTERM)  # the reaper kills the tree and exits
            except OSError:
                pass
        if self._wait(3.0) is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
            self._wait(1.0)


_probes: dict[tuple[str, str, tuple[str, ...], str], TaskProbe] = {}
_probes_lock = threading.Lock()


def probe_for(ref: str, key: str) -> TaskProbe:
    """The probe of ``ref`` for this process (one per module and import path; kept until exit)."""
    ident = (ref, key, tuple(sys.path), os.getcwd())
    with _probes_lock:
        if ident not in _probes:
            _probes[ident] = TaskProbe(ref, key)
        probe = _probes[ident]
    if probe.failure is not None:
        raise probe.failure
    return probe


@atexit.register
def close_probes() -> None:
    """End every probe's subprocess (at exit, and when a command is done with its tasks)."""
    with _probes_lock:
        probes = list(_probes.values())
        _probes.clear()
    for probe in probes:
        probe.close(wait=probe.failure is not None)


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value

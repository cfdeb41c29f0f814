"""The subprocess side of `train.contract.task_probe`: import one task module, report what it
did, validate options on request; and the reaper that ends whatever the module left running.

Started as ``python -c`` by the probe, with stdin and stdout as the request and answer pipes.
Imports only what it needs before the task's module (the interpreter's start-up is the probe's
cost): the standard library's os, sys, json, signal, time, and `train.contract` in the import
process. Linux's subreaper and /proc make "nothing left behind" exact there; elsewhere the
probe kills the process group.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

_PR_SET_CHILD_SUBREAPER = 36


def main(ref: str, key: str) -> None:
    """The subprocess: fork the import process and reap it (and all it left) when it ends."""
    answers = os.dup(1)  # private copies; fds 0 and 1 are the module's (and its children's)
    requests = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    _become_subreaper()
    worker = os.fork()
    if worker == 0:
        _import_and_serve(ref, key, requests, answers, devnull)
        os._exit(0)
    # The reaper keeps no end of the pipes: they end when the import process ends.
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(answers)
    os.close(requests)
    _reap(worker)


def _become_subreaper() -> None:
    """Orphans below this process become its children (Linux): nothing escapes by forking twice."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the process group is killed instead
        pass


def _reap(worker: int) -> None:
    """Wait for the import process (or the probe's SIGTERM), kill all that is left, and exit
    with the import process's status (what the probe reports for an ``os._exit``)."""
    def stop(signum: int, frame: Any) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    status = 0
    try:
        status = os.waitstatus_to_exitcode(os.waitpid(worker, 0)[1])
    except _Stop:
        pass
    _kill_descendants()
    os._exit(status & 0xFF if status >= 0 else 128 - status)


class _Stop(BaseException):
    pass


def _import_and_serve(ref: str, key: str, requests: int, answers: int, devnull: int) -> None:
    """The import process: import the task with fds 0-2 its own (nothing reaches the probe's
    output), say whether that went well, then validate each requested set of options with
    the task's own rules until the requests end."""
    from train.contract import SpecError
    from train.contract.task import build_options, options_to_dict, resolve_task

    os.dup2(devnull, 0)
    os.dup2(_capture_file(), 1)
    os.dup2(devnull, 2)
    out = os.fdopen(answers, "w", encoding="utf-8")
    _become_subreaper()
    module = ref.partition(":")[0]
    try:
        task = resolve_task(ref, key)
    except SpecError as err:
        return _send(out, {"error": [err.key, err.message]})
    except BaseException as err:  # SystemExit, KeyboardInterrupt, GeneratorExit...: one line
        return _send(out, {"error": [key, f"importing {module!r} raised {_first_line(err)} (a task module must not "
                                          "exit or raise when imported)"]})
    problem = _side_effects(module)
    if problem:
        return _send(out, {"error": [key, problem]})
    _send(out, {"ready": True})
    for line in os.fdopen(requests, "r", encoding="utf-8"):
        request = json.loads(line)
        try:
            options = build_options(task, json.loads(request["options"]), request["prefix"])
            answer: dict = {"options": None if options is None else options_to_dict(options)}
        except SpecError as err:
            answer = {"error": [err.key, err.message]}
        except BaseException as err:
            answer = {"error": [request["prefix"], f"{ref}.Options raised {_first_line(err)}"]}
        problem = _side_effects(module, "validating the options")
        _send(out, {"error": [key, problem]} if problem else answer)


def _side_effects(module: str, when: str = "when imported") -> str | None:
    """What importing (or validating) did that a task module must not: print, start processes."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    written = os.fstat(1).st_size
    if written:
        return (f"{module!r} wrote {written} bytes to stdout {when} (a task module must not print at "
                "import: its output would land in the command's)")
    running = [pid for pid in _children(os.getpid()) if _state(pid) not in ("Z", "X", None)]
    if running:
        return (f"{module!r} started a process {when} (pid {running[0]}: {_cmdline(running[0])}; a task module must "
                "not start processes at import)")
    return None


def _capture_file() -> int:
    """A file of the import process's own for fd 1: what the module prints is counted, never shown."""
    try:
        return os.memfd_create("task-import-stdout")
    except (AttributeError, OSError):  # not Linux
        import tempfile

        return os.dup(tempfile.TemporaryFile().fileno())


def _send(out: Any, message: dict) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}({text[0][:100]})" if text else type(err).__name__


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
    return "".join(c if c.isprintable() else "?" for c in text)[:60] or "?"


def _children(pid: int) -> list[int]:
    """The children of ``pid`` (of a subreaper: every process below it whose parent ended)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        found = []
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        return found
    except OSError:  # no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN): read every process
        return [child for child in _descendants(pid) if (_stat_fields(child) or ["", ""])[1] == str(pid)]


def _descendants(root: int) -> list[int]:
    """Every process below ``root``, from /proc's parent links (empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kill_descendants() -> None:
    """Kill and reap everything below this process, until nothing is left (orphans come here)."""
    for _ in range(200):
        left = _descendants(os.getpid())
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = -1
            if pid <= 0:
                break
        if not left:
            return
        time.sleep(0.01)
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)  # last resort: the process group, this one too
    except OSError:
        pass

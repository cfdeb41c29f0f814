"""A generator of broken run directories, run through every command that reads them.

Each case takes one good run directory, breaks ONE entry of it in one way (wrong JSON types,
non-finite or huge numbers, binary, a FIFO, a directory, a link to a file, a FIFO or a folder
outside the run, run.json path and id fields pointing outside or holding ``../``) and runs
one command on it: ``cluster status``, ``logs``, ``logs --err``, ``collect``, ``resume``,
``cancel`` (in-process through ``cluster.cli.main``, so that hundreds of cases stay fast) or
``python -m train`` (``train.__main__.main``, in-process too). Every case asserts:

- no traceback (an unexpected exception fails the test), and an exit status as specified;
- it returns within a bound (SIGALRM: a FIFO opened blocking would hang, and fail here);
- an error is one line naming the broken file; status shows one "unknown" row for it;
- nothing outside the run directory is read, written or deleted: a sentinel folder beside it
  (files, a FIFO, a folder of checkpoint-like files) keeps its names, bytes and mtimes; the
  links point at files whose content would show in the output if read (a marker), and at a
  FIFO that would hang a reader;
- no other process is signalled: the run's job id is the pid of a live process that looks
  like ANOTHER run's local controller (``cluster cancel`` once killed such a process).

A few cases run the real ``cluster`` command as a subprocess, for the CLI-level guarantees
(nothing from a traceback, one line on stderr, a status FIFO that does not hang).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from cluster.cli import main as cluster_main
from cluster.spec import load_spec
from train.contract import rundir

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "jobs/smoke.yaml"
MARKER = "SENTINEL-MARKER-7f3a"
"""In every file outside the run: a command that followed a link would show it."""
DEAD_PID = 99999999
"""A job id no process can have (above any pid_max): the run's controller is gone."""
BOUND_SECONDS = 60
"""Generous: a case takes well under a second; a hang (a blocking FIFO open) takes forever."""


# ------------------------------------------------------------------ the sentinel


@pytest.fixture(scope="module")
def controller_lookalike(tmp_path_factory: pytest.TempPathFactory):
    """A live process whose command line is that of ANOTHER run's local controller."""
    other = tmp_path_factory.mktemp("other-run")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)",
                             "cluster.backends.local_executor", str(other / "logs")])
    yield proc
    proc.kill()
    proc.wait()


def make_outside(root: Path) -> Path:
    """Files a broken run's links point at: each would be noticed if read, written or deleted."""
    out = root / "outside"
    (out / "dir").mkdir(parents=True)
    record = {"name": MARKER, "scheduler": "local", "state": "completed", "jobs": []}
    (out / "file.json").write_text(json.dumps(record))
    (out / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_auc": 0.123456, "note": MARKER}) + "\n")
    (out / "text.out").write_text(f"{MARKER} log line\n")
    os.mkfifo(out / "fifo")
    for name in ("ckpt-000000001.pt", "ckpt-000000001.json", ".tmp-ckpt-000000002.pt.abc", "final.pt",
                 "events.out.tfevents.1", "1_0_log.out", "1_0_log.err", "rank-0.sha256"):
        (out / "dir" / name).write_text(MARKER)
    return out


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, bytes (files) and mtime, so that any change shows."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            info = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            found[str(path.relative_to(root))] = (info.st_mode, data, info.st_mtime_ns)
    info = root.lstat()
    found["."] = (info.st_mode, None, info.st_mtime_ns)
    return found


# ------------------------------------------------------------------ a good run


def make_run(runs: Path, name: str, job_pid: int, state: str = "running") -> Path:
    """A run directory as a local run writes it, with every file the commands read."""
    run = runs / name
    (run / "logs").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "tensorboard").mkdir()
    (run / "ranks").mkdir()
    spec = load_spec(SMOKE)
    (run / "spec.yaml").write_text(spec.to_yaml())
    job = str(job_pid)
    (run / "run.json").write_text(json.dumps({
        "run_id": name, "name": name, "scheduler": "local", "state": state, "created": "2026-12-06T10:00:00+00:00",
        "jobs": [{"job_id": job, "submitted": "2026-12-06T10:00:00+00:00", "reason": "submit"}],
        "attempts": [{"job_id": job, "started": "2026-12-06T10:00:01+00:00", "host": "h"}],
        "requeues": 0, "max_requeues": 1, "walltime_seconds": 600, "epochs": 3, "spec": "spec.yaml",
        **({"error": "ValueError: boom", "ended": "2026-12-06T10:05:00+00:00"}
           if state == "failed" else {}),
    }, indent=2))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_auc": 0.5 + e / 10, "val_loss": 0.3})
                                               + "\n" for e in (1, 2)))
    (run / "progress.json").write_text(json.dumps({"epoch": 2, "step": 3, "epochs": 3, "steps_per_epoch": 10,
                                                   "global_step": 23, "time": 1.0}))
    (run / "logs" / f"{job}_0_log.out").write_text("epoch 1/3 ...\n")
    (run / "logs" / f"{job}_0_log.err").write_text("a warning\n")
    (run / "tensorboard" / "events.out.tfevents.1").write_bytes(b"\0\1event")
    (run / ".run.lock").write_text("")
    return run


# ------------------------------------------------------------------ the shapes


@dataclass(frozen=True)
class Shape:
    """One way to break one entry of a run directory."""

    id: str
    entry: str
    """What is broken, relative to the run ("logs/JOB_0_log.out": JOB is the run's job id)."""
    make: Callable[[Path, Path, str], None]
    """make(run, outside, job_id) breaks it."""
    refused_by: frozenset[str]
    """Commands that must end in one line naming the entry, exit non-zero (status: an
    "unknown" row naming it); the others may succeed, but never crash, hang or touch outside."""


CLUSTER_COMMANDS = ("status", "logs", "logs-err", "collect", "resume", "cancel")
ALL = frozenset(CLUSTER_COMMANDS) | {"train"}


def _write(data: bytes | str) -> Callable[[Path, Path, str], None]:
    def make(path: Path, outside: Path, job: str) -> None:
        path.unlink(missing_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return make


def _record(change: Callable[[dict, Path, Path], None]) -> Callable[[Path, Path, str], None]:
    def make(path: Path, outside: Path, job: str) -> None:
        record = json.loads(path.read_text())
        change(record, path.parent, outside)
        path.write_text(json.dumps(record))
    return make


def _replace(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fifo(path: Path, outside: Path, job: str) -> None:
    _replace(path)
    os.mkfifo(path)


def _directory(path: Path, outside: Path, job: str) -> None:
    _replace(path)
    path.mkdir()
    (path / "inner").write_text("x")


def _plain_file(path: Path, outside: Path, job: str) -> None:
    _replace(path)
    path.write_text("not a folder")


def _link_to(target: str) -> Callable[[Path, Path, str], None]:
    def make(path: Path, outside: Path, job: str) -> None:
        _replace(path)
        path.symlink_to(outside / target)
    return make


def _huge(path: Path, outside: Path, job: str) -> None:
    _replace(path)
    with open(path, "wb") as handle:  # sparse: no disk, but larger than any cap
        handle.truncate(rundir.MAX_METRICS_BYTES + 1)


FILE_KINDS = {
    "fifo": _fifo, "directory": _directory, "link-outside-file": _link_to("file.json"),
    "link-outside-fifo": _link_to("fifo"), "link-dangling": _link_to("missing"),
}
FOLDER_KINDS = {
    "fifo": _fifo, "plain-file": _plain_file, "link-outside-dir": _link_to("dir"),
    "link-outside-file": _link_to("file.json"),
}

# Which commands read (or write) each entry, so must refuse it when it is broken.
STATUS_READS = {"run.json", "progress.json", "summary.json", "metrics.jsonl"}
FILE_ENTRIES = {
    "run.json": ALL,
    "progress.json": frozenset({"status", "resume", "train"}),
    "summary.json": frozenset({"status", "collect", "resume", "train"}),
    "metrics.jsonl": frozenset({"status", "collect", "resume", "train"}),
    "spec.yaml": frozenset({"collect", "resume", "train"}),
    ".trainer.lock": frozenset({"resume", "train"}),
    ".run.lock": frozenset({"resume", "train"}),
    "checkpoints/final.pt": frozenset({"collect", "resume", "train"}),
    "checkpoints/ckpt-000000005.pt": frozenset({"resume", "train"}),
    "logs/JOB_0_log.out": frozenset({"logs", "collect", "resume", "train"}),
    "logs/JOB_0_log.err": frozenset({"logs-err", "collect", "resume", "train"}),
    "tensorboard/events.out.tfevents.1": frozenset({"collect"}),
}
FOLDER_ENTRIES = {
    "logs": frozenset({"logs", "logs-err", "collect", "resume", "train"}),
    "checkpoints": frozenset({"collect", "resume", "train"}),
    "tensorboard": frozenset({"collect", "resume", "train"}),
    "ranks": frozenset({"resume", "train"}),
}

RUN_JSON_CONTENT = {
    "list": "[1, 2]", "string": '"text"', "number": "3", "null": "null", "nan": "NaN", "infinity": "Infinity",
    "1e400": '{"requeues": 1e400}', "400-digit-requeues": '{"requeues": ' + "9" * 400 + "}",
    "binary": b"\xff\xfe\x00\x01garbage", "empty": "", "truncated": '{"jobs": [',
    "deep-nesting": "[" * 100000,
}
RUN_JSON_FIELDS: dict[str, Callable[[dict, Path, Path], None]] = {
    "jobs-string": lambda r, run, out: r.update(jobs="x"),
    "jobs-nan": lambda r, run, out: r.update(jobs=float("nan")),
    "job-id-dotdot": lambda r, run, out: r["jobs"][-1].update(job_id="../../outside/dir/1"),
    "job-id-absolute": lambda r, run, out: r["jobs"][-1].update(job_id=str(out / "dir" / "1")),
    "job-id-option": lambda r, run, out: r["jobs"][-1].update(job_id="--all"),
    "job-id-glob": lambda r, run, out: r["jobs"][-1].update(job_id="*"),
    "job-id-400-digits": lambda r, run, out: r["jobs"][-1].update(job_id="1" * 400),
    "job-id-number": lambda r, run, out: r["jobs"][-1].update(job_id=int(r["jobs"][-1]["job_id"])),
    "job-id-newline": lambda r, run, out: r["jobs"][-1].update(job_id=r["jobs"][-1]["job_id"] + "\n"),
    "job-id-arabic-digits": lambda r, run, out: r["jobs"][-1].update(job_id="\u0663\u0664"),
    "requeues-negative": lambda r, run, out: r.update(requeues=-1),
    "requeues-text": lambda r, run, out: r.update(requeues="many"),
    "requeues-bool": lambda r, run, out: r.update(requeues=True),
    "attempts-string": lambda r, run, out: r.update(attempts="x"),
    "attempt-not-object": lambda r, run, out: r.update(attempts=[1]),
    "epochs-list": lambda r, run, out: r.update(epochs=[3]),
    "scheduler-list": lambda r, run, out: r.update(scheduler=["slurm"]),
    "scheduler-unknown": lambda r, run, out: r.update(scheduler="lsf"),
    "name-huge": lambda r, run, out: r.update(name="n" * 100000),
    "logs-dir-outside": lambda r, run, out: r.update(logs_dir=str(out / "dir")),
    "logs-dir-dotdot": lambda r, run, out: r.update(logs_dir="../../outside/logs"),
    "logs-dir-other-run": lambda r, run, out: r.update(logs_dir=str(run.parent / "other" / "logs")),
    "command-not-list": lambda r, run, out: r.update(kind="command", command="rm -rf /"),
}
PROGRESS_CONTENT = {"list": "[]", "nan": '{"epoch": NaN}', "epoch-text": '{"epoch": "2"}',
                    "epoch-negative": '{"epoch": -1}', "epoch-400-digits": '{"epoch": ' + "1" * 400 + "}",
                    "binary": b"\x00\xff", "empty": ""}
SUMMARY_CONTENT = {"list": "[1]", "nan": "NaN", "binary": b"\x80\x81", "infinity": '{"val_auc": Infinity}'}


def _shapes() -> list[Shape]:
    shapes: list[Shape] = []
    for entry, readers in FILE_ENTRIES.items():
        for kind, make in FILE_KINDS.items():
            shapes.append(Shape(f"{entry}:{kind}", entry, make, readers))
    for entry, readers in FOLDER_ENTRIES.items():
        for kind, make in FOLDER_KINDS.items():
            shapes.append(Shape(f"{entry}/:{kind}", entry, make, readers))
    shapes.append(Shape("run.json:huge", "run.json", _huge, frozenset(CLUSTER_COMMANDS)))
    cluster_all = frozenset(CLUSTER_COMMANDS)
    for name, text in RUN_JSON_CONTENT.items():
        shapes.append(Shape(f"run.json:{name}", "run.json", _write(text), cluster_all))
    for name, change in RUN_JSON_FIELDS.items():
        # logs and collect need no scheduler: an unknown one stops only what asks it
        readers = frozenset({"status", "resume", "cancel"}) if name == "scheduler-unknown" else cluster_all
        shapes.append(Shape(f"run.json:{name}", "run.json", _record(change), readers))
    for name, text in PROGRESS_CONTENT.items():
        shapes.append(Shape(f"progress.json:{name}", "progress.json", _write(text), frozenset({"status", "resume"})))
    for name, text in SUMMARY_CONTENT.items():
        shapes.append(Shape(f"summary.json:{name}", "summary.json", _write(text),
                            frozenset({"status", "collect", "resume"})))
    return shapes


SHAPES = _shapes()


# ------------------------------------------------------------------ running one command


class Hung(Exception):
    pass


@contextlib.contextmanager
def bounded(seconds: int = BOUND_SECONDS):
    """Fail (Hung) a call that does not return within ``seconds``: SIGALRM interrupts a
    blocking open or read."""
    def expire(signum, frame):
        raise Hung(f"did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _no_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    """collect's curves.png (matplotlib, ~0.3 s a plot) is not what these cases test."""
    import cluster.collect

    monkeypatch.setattr(cluster.collect, "plot_curves", lambda records, path, title: None)


def run_cluster(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``cluster ARGS`` in this process: (exit status, stdout, stderr)."""
    logging.getLogger().handlers.clear()  # main's basicConfig then logs to this test's stderr
    capsys.readouterr()
    with bounded():
        code = cluster_main(args)
    out, err = capsys.readouterr()
    return code, out, err


def run_trainer(run: Path, config: Path, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from train.__main__ import main as train_main

    capsys.readouterr()
    with bounded():
        code = train_main(["--config", str(config), "--run-dir", str(run)])
    out, err = capsys.readouterr()
    return code, out, err


def command_args(command: str, run: Path, results: Path) -> list[str]:
    return {"status": ["status", str(run)], "logs": ["logs", str(run)], "logs-err": ["logs", "--err", str(run)],
            "collect": ["collect", str(run), "--to", str(results)], "resume": ["resume", str(run)],
            "cancel": ["cancel", str(run)]}[command]


def _entry_path(run: Path, entry: str, job: str) -> Path:
    return run / entry.replace("JOB", job)


def _cases() -> list:
    cases = []
    for shape in SHAPES:
        for command in CLUSTER_COMMANDS:
            cases.append(pytest.param(shape, command, id=f"{shape.id}-{command}"))
        # python -m train on every shape it must refuse (before it trains: the others would
        # train a whole run, which tests/train covers)
        if "train" in shape.refused_by:
            cases.append(pytest.param(shape, "train", id=f"{shape.id}-train"))
    return cases


CASES = _cases()


@pytest.mark.parametrize("shape, command", CASES)
def test_a_broken_entry_under_a_command(shape: Shape, command: str, tmp_path: Path, controller_lookalike,
                                        capsys: pytest.CaptureFixture) -> None:
    outside = make_outside(tmp_path)
    job = str(controller_lookalike.pid)
    run = make_run(tmp_path / "runs", "victim", controller_lookalike.pid)
    (tmp_path / "runs" / "other").mkdir()
    config = tmp_path / "resolved.yaml"
    config.write_text((run / "spec.yaml").read_text())
    shape.make(_entry_path(run, shape.entry, job), outside, job)
    before = snapshot(outside)
    jobs_before = _jobs(run)

    if command == "train":
        code, out, err = run_trainer(run, config, capsys)
    else:
        code, out, err = run_cluster(command_args(command, run, tmp_path / "results"), capsys)

    text = out + err
    assert "Traceback" not in text, text
    assert MARKER not in text, f"read a file outside the run: {text}"
    assert snapshot(outside) == before, "something outside the run directory changed"
    assert controller_lookalike.poll() is None, "another run's controller was signalled"
    assert not (tmp_path / "runs" / "other").exists() or not any((tmp_path / "runs" / "other").iterdir())
    assert "\x1b" not in out and "\x00" not in out
    entry_name = Path(shape.entry.replace("JOB", job)).name
    if command in shape.refused_by:
        if command == "status":
            assert code == 0, text
            lines = [line for line in out.splitlines() if line.startswith("victim: unknown: ")]
            assert len(lines) == 1 and entry_name in lines[0], out
            assert any(line.split()[:1] == ["victim"] and "unknown" in line.split() for line in out.splitlines())
        else:
            assert code != 0, text
            assert len(err.strip().splitlines()) == 1, err
            assert entry_name in err, err
    else:
        assert code in (0, 1), text
        assert len(err.strip().splitlines()) <= 1, err
    if command == "resume":  # nothing started: no job recorded, the run not touched
        assert _jobs(run) == jobs_before
    if command == "collect" and shape.entry != "summary.json":  # nothing written into the run
        assert not os.path.lexists(run / "summary.json")


def _jobs(run: Path) -> object:
    """run.json's jobs, or its raw first bytes (never through a link, never a FIFO: the test
    itself must not hang or read outside)."""
    path = run / "run.json"
    if path.is_symlink() or not path.is_file():
        return ("not a file", os.path.islink(path))
    return path.read_bytes()


# ------------------------------------------------------------------ metrics lines that are not objects


@pytest.mark.parametrize("line", ["1", '"text"', "[1, 2]", "null", "\xff\xfe", '{"epoch": "x"}',
                                  '{"epoch": -2}', '{"epoch": ' + "7" * 400 + "}"])
@pytest.mark.parametrize("command", ["status", "collect"])
def test_metrics_lines_that_are_not_records_are_skipped_and_counted(line: str, command: str, tmp_path: Path,
                                                                    controller_lookalike,
                                                                    capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "runs", "victim", controller_lookalike.pid)
    good = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_bytes((good + line + "\n" + line + "\n").encode("utf-8", "surrogateescape"))
    code, out, err = run_cluster(command_args(command, run, tmp_path / "results"), capsys)
    assert code == 0 and "Traceback" not in err, out + err
    counted = [l for l in out.splitlines() if "2 " in l and "skipped" in l]
    assert len(counted) == 1, out  # the count, shown once
    if command == "status":
        assert "val_auc=0.7000" in out  # the last good record still counts
    else:
        assert json.loads((tmp_path / "results" / "victim" / "summary.json").read_text())["skipped_metrics_lines"] == 2


def test_a_nan_metric_is_a_measurement_not_a_broken_line(tmp_path: Path, controller_lookalike,
                                                         capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "runs", "victim", controller_lookalike.pid)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "val_auc": NaN, "val_loss": Infinity}\n')
    code, out, err = run_cluster(["status", str(run)], capsys)
    assert code == 0 and "skipped" not in out and "3/3" in out, out + err


# ------------------------------------------------------------------ sidecars (read by resume points)


@pytest.mark.parametrize("content", ["[1]", "NaN", '{"global_step": NaN}', '{"global_step": "5"}',
                                     '{"global_step": 5, "file": "../../outside/dir/ckpt-000000001.pt"}',
                                     '{"global_step": 5, "bytes": -1, "crc32": 0}', "\xff", "link", "fifo",
                                     "pt-link"])
def test_a_broken_sidecar_is_never_a_resume_point(content: str, tmp_path: Path) -> None:
    from train import runfiles

    outside = make_outside(tmp_path)
    run = make_run(tmp_path / "runs", "victim", 1)
    side = run / "checkpoints" / "ckpt-000000005.json"
    (run / "checkpoints" / "ckpt-000000005.pt").write_bytes(b"w" * 7)
    if content == "link":
        side.symlink_to(outside / "dir" / "ckpt-000000001.json")
    elif content == "fifo":
        os.mkfifo(side)
    elif content == "pt-link":  # a valid sidecar whose .pt is a link to a file outside of the same size
        import zlib

        (run / "checkpoints" / "ckpt-000000005.pt").unlink()
        (run / "checkpoints" / "ckpt-000000005.pt").symlink_to(outside / "dir" / "ckpt-000000001.pt")
        side.write_text(json.dumps({"global_step": 5, "epoch": 0, "file": "ckpt-000000005.pt",
                                    "bytes": len(MARKER), "crc32": zlib.crc32(MARKER.encode())}))
    else:
        side.write_bytes(content.encode("utf-8", "surrogateescape"))
    before = snapshot(outside)
    with bounded():
        assert runfiles.resume_point(run) is None
    assert snapshot(outside) == before


# ------------------------------------------------------------------ collect --to


@pytest.mark.parametrize("where", ["parent", "itself", "inside", "other-run", "sweep"])
def test_collect_never_writes_into_a_run(where: str, tmp_path: Path, controller_lookalike,
                                         capsys: pytest.CaptureFixture) -> None:
    runs = tmp_path / "runs"
    run = make_run(runs, "victim", controller_lookalike.pid, state="failed")
    other = make_run(runs, "neighbour", controller_lookalike.pid, state="failed")
    sweep = runs / "a-sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    to = {"parent": runs, "itself": run, "inside": run / "results", "other-run": other / "x",
          "sweep": sweep / "results"}[where]
    before = {p: snapshot(p) for p in (run, other, sweep)}
    code, out, err = run_cluster(["collect", str(run), "--to", str(to)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "inside the run directory" in err, out + err
    assert {p: snapshot(p) for p in (run, other, sweep)} == before
    assert not (run / "summary.json").exists()


def test_a_summary_json_cannot_say_what_collect_states(tmp_path: Path, controller_lookalike,
                                                       capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "runs", "victim", controller_lookalike.pid, state="failed")
    os.kill(controller_lookalike.pid, 0)
    (run / "summary.json").write_text(json.dumps({"run_id": "../x", "collected_files": ["/etc/passwd"],
                                                  "run_dir": "/elsewhere", "val_auc": 0.9}))
    code, out, err = run_cluster(["collect", str(run), "--to", str(tmp_path / "results")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "results" / "victim" / "summary.json").read_text())
    assert (summary["run_id"], summary["run_dir"], summary["val_auc"]) == ("victim", str(run.resolve()), 0.9)
    assert "/etc/passwd" not in summary["collected_files"]


# ------------------------------------------------------------------ control characters


def test_names_from_a_run_are_shown_escaped(tmp_path: Path, controller_lookalike, capsys) -> None:
    run = make_run(tmp_path / "runs", "victim", controller_lookalike.pid, state="failed")
    record = json.loads((run / "run.json").read_text())
    record["name"] = "fake\nvictim  completed\x1b[31m"
    (run / "run.json").write_text(json.dumps(record))
    (run / "logs" / f"{controller_lookalike.pid}_0_log.err").write_text("ValueError: \x1b[2Jboom\n")
    for args in (["status", str(run)], ["collect", str(run), "--to", str(tmp_path / "results")]):
        code, out, err = run_cluster(args, capsys)
        assert code == 0, err
        assert "\x1b" not in out + err, out
        assert args[0] != "status" or "\\x1b" in out, out  # shown, escaped
        assert not any(line.startswith("victim  completed") for line in out.splitlines()), out


# ------------------------------------------------------------------ status over many broken runs


def test_status_lists_the_good_run_and_one_row_per_broken_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    outside = make_outside(tmp_path)
    runs = tmp_path / "runs"
    gone = str(DEAD_PID)
    good = make_run(runs, "good", DEAD_PID, state="failed")
    broken = {f"broken-{i:03d}": s for i, s in enumerate(s for s in SHAPES if "status" in s.refused_by)}
    for name, shape in broken.items():
        run = make_run(runs, name, DEAD_PID, state="failed")
        shape.make(_entry_path(run, shape.entry, gone), outside, gone)
    # runs whose stderr log (read for a failed run's diagnosis) is a FIFO, a link, a folder
    odd_logs = {f"err-log-{kind}": make for kind, make in FILE_KINDS.items()}
    for name, make in odd_logs.items():
        run = make_run(runs, name, DEAD_PID, state="failed")
        make(run / "logs" / f"{gone}_0_log.err", outside, gone)
    before = snapshot(outside)

    code, out, err = run_cluster(["status", "--json", "--runs-dir", str(runs)], capsys)
    assert code == 0 and "Traceback" not in out + err, out + err
    rows = {row["run_id"]: row for row in json.loads(out)}
    assert len(rows) == 1 + len(broken) + len(odd_logs)
    assert (rows["good"]["state"], rows["good"]["epoch"], rows["good"]["metric"]) == ("failed", 2, 0.7), rows["good"]
    assert "ValueError: boom" in rows["good"]["diagnosis"]
    for name, shape in broken.items():
        assert rows[name]["state"] == "unknown" and Path(shape.entry).name in rows[name]["diagnosis"], (shape.id, rows[name])
    for name in odd_logs:
        assert rows[name]["state"] == "failed", rows[name]

    code, out, err = run_cluster(["status", "--runs-dir", str(runs)], capsys)
    assert code == 0 and "Traceback" not in out + err, out + err
    for name, shape in broken.items():
        mine = [line for line in out.splitlines() if line.startswith(f"{name}: unknown: ")]
        assert len(mine) == 1 and Path(shape.entry).name in mine[0], (shape.id, out)
    table = out.split("\n\n")[0].splitlines()
    assert len([line for line in table if line.split()[:1] and line.split()[0] in rows]) == len(rows)
    assert snapshot(outside) == before


# ------------------------------------------------------------------ the real command (CLI-level)


def cluster_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=BOUND_SECONDS)


@pytest.mark.parametrize("shape_id, command", [("run.json:fifo", "status"), ("run.json:list", "logs"),
                                               ("metrics.jsonl:link-outside-fifo", "collect"),
                                               ("run.json:job-id-dotdot", "cancel"), ("run.json:nan", "resume")])
def test_the_real_command(shape_id: str, command: str, tmp_path: Path, controller_lookalike) -> None:
    shape = next(s for s in SHAPES if s.id == shape_id)
    outside = make_outside(tmp_path)
    run = make_run(tmp_path / "runs", "victim", controller_lookalike.pid)
    shape.make(_entry_path(run, shape.entry, str(controller_lookalike.pid)), outside, str(controller_lookalike.pid))
    proc = cluster_process(*command_args(command, run, tmp_path / "results"), cwd=tmp_path)
    assert "Traceback" not in proc.stderr and MARKER not in proc.stdout + proc.stderr, proc.stderr
    if command == "status":
        assert proc.returncode == 0 and "victim: unknown: " in proc.stdout and "FIFO" in proc.stdout, proc.stdout
    else:
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert shape.entry in proc.stderr, proc.stderr
    assert controller_lookalike.poll() is None


# ------------------------------------------------------------------ a refused cluster env leaves nothing


@pytest.mark.parametrize("requirements", ["/dev/zero", "fifo", "directory", "missing"])
def test_a_refused_cluster_env_leaves_nothing(requirements: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    target = {"/dev/zero": "/dev/zero", "fifo": str(tmp_path / "req.fifo"), "directory": str(tmp_path),
              "missing": str(tmp_path / "nope.txt")}[requirements]
    if requirements == "fifo":
        os.mkfifo(target)
    import yaml

    data = yaml.safe_load(SMOKE.read_text())
    data.setdefault("environment", {}).update(venv=f"{home}/venv", tmpdir=f"{home}/tmp", requirements_file=target)
    spec = tmp_path / "env.yaml"
    spec.write_text(yaml.safe_dump(data))
    tmp_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    proc = cluster_process("env", str(spec), cwd=tmp_path)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
    assert "requirements_file" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert list(home.iterdir()) == [], "a refused cluster env made something"
    new = {n for n in set(os.listdir(os.environ.get("TMPDIR", "/tmp"))) - tmp_before if "pip" in n or "venv" in n}
    assert not new, new

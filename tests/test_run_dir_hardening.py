"""Hostile and careless run directories and command lines: one line, the right exit status,
nothing signalled or touched that should not be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.runs import Run

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "jobs/smoke.yaml")


def cluster(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def one_line_error(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr.strip()


def make_run(root: Path, name: str, record: object) -> Path:
    path = root / "runs" / name
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps(record))
    return path


def test_cancel_never_signals_a_process_that_is_not_the_runs_controller(tmp_path: Path) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = make_run(tmp_path, "stolen-pid", {"scheduler": "local", "state": "running",
                                                "jobs": [{"job_id": str(victim.pid), "reason": "submit"}]})
        proc = cluster("cancel", str(run), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        time.sleep(0.5)
        assert victim.poll() is None, "cancel killed an unrelated process"
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("scheduler", ["lsf", "", 17, None])
def test_unknown_scheduler_in_run_json_is_one_line(tmp_path: Path, scheduler: object) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = make_run(tmp_path, "odd", {"scheduler": scheduler, "state": "running",
                                         "jobs": [{"job_id": str(victim.pid), "reason": "submit"}]})
        message = one_line_error(cluster("cancel", str(run), cwd=tmp_path), 1)
        assert "run.json" in message or "unknown scheduler" in message, message
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("record", [[1, 2], {"jobs": [{}]}, {"jobs": "x"}, {"jobs": [{"job_id": 5}]}, "text",
                                    {"scheduler": ["slurm"]}, {"requeues": "many", "epochs": [3]}])
def test_a_malformed_run_json_shows_as_its_own_row(tmp_path: Path, record: object) -> None:
    make_run(tmp_path, "good", {"scheduler": "local", "state": "completed", "name": "good", "jobs": []})
    make_run(tmp_path, "bad", record)
    proc = cluster("status", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["run_id"]: r for r in json.loads(proc.stdout)}
    assert rows["good"]["state"] == "completed"
    assert rows["bad"]["state"] in ("unknown", "failed") and "Traceback" not in proc.stderr
    table = cluster("status", cwd=tmp_path)
    assert table.returncode == 0 and "good" in table.stdout and "bad" in table.stdout, table.stderr


def test_version(tmp_path: Path) -> None:
    proc = cluster("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("cluster-train "), proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [["logs", "x", "--tail", "-5"], ["status", "--watch", "--interval", "-1"],
                                  ["status", "--watch", "--interval", "nan"], ["status", "--interval", "inf"]])
def test_bad_numbers_on_the_command_line(tmp_path: Path, args: list[str]) -> None:
    message = one_line_error(cluster(*args, cwd=tmp_path), 2)
    assert args[-2] in message


def test_tail_zero_prints_no_log_lines(tmp_path: Path) -> None:
    run = make_run(tmp_path, "logged", {"scheduler": "local", "state": "completed",
                                        "jobs": [{"job_id": "123", "reason": "submit"}]})
    (run / "logs").mkdir()
    (run / "logs" / "123_0_log.out").write_text("one\ntwo\n")
    assert cluster("logs", str(run), "--tail", "1", cwd=tmp_path).stdout == "two\n"
    assert cluster("logs", str(run), "--tail", "0", cwd=tmp_path).stdout == ""


@pytest.mark.parametrize("where", ["file", "readonly", "long"])
def test_runs_dir_that_cannot_hold_runs(tmp_path: Path, where: str) -> None:
    if where == "file":
        (tmp_path / "afile").write_text("")
        runs_dir = str(tmp_path / "afile" / "runs")
    elif where == "readonly":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        (tmp_path / "ro").mkdir(mode=0o500)
        runs_dir = str(tmp_path / "ro" / "runs")
    else:
        runs_dir = str(tmp_path / ("x" * 300))
    proc = cluster("submit", SMOKE, "--executor", "local", "--set", f"output.runs_dir={runs_dir}", cwd=tmp_path)
    message = proc.stderr.strip()
    assert proc.returncode in (1, 2) and "Traceback" not in message and len(message.splitlines()) == 1, message
    assert not list(tmp_path.rglob("run.json"))


def test_collect_to_a_file_is_one_line(tmp_path: Path) -> None:
    run = make_run(tmp_path, "done", {"scheduler": "local", "state": "completed", "jobs": []})
    (tmp_path / "results").write_text("not a directory")
    message = one_line_error(cluster("collect", str(run), "--to", str(tmp_path / "results"), cwd=tmp_path), 1)
    assert "results" in message


@pytest.mark.parametrize("sweep, words", [
    (["train.lr=[,1"], "train.lr"),
    (["train.lr=1,2", "train.seed=" + ",".join(map(str, range(50))), "train.batch_size=" + ",".join(map(str, range(1, 12)))],
     "1100 tasks"),
])
def test_bad_sweep_on_the_command_line_is_one_line(tmp_path: Path, sweep: list[str], words: str) -> None:
    args = [a for item in sweep for a in ("--sweep", item)]
    message = one_line_error(cluster("submit", SMOKE, "--executor", "local", *args, cwd=tmp_path), 2)
    assert words in message
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())

"""Command jobs end to end: a numpy-only program that follows the contract (examples/contract_train.py)
on the real Slurm (deadline requeues and ``scontrol requeue``), through Slurm's Torque-compatible
qsub (continuation jobs), on the local executor (USR2 restarts), as a 3-point vars sweep in one
sbatch; a program that ignores the contract; awkward arguments through the submitit path.

Sizing. The program paces its steps with ``--step-sleep`` (no number depends on it), so the
work takes a known minimum time whatever the load: 120 steps x 0.25 s = 30 s. Under a 1-minute
walltime it stops 45 s before the deadline, i.e. every attempt has at most 15 s: at least two
attempts on any machine, and a slower machine only means more (max_requeues leaves room for
twelve). The reference is the same program uninterrupted, with no sleep.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cluster.runs import Run
from support import slurm as sh
from support.runs import FIRST_EPOCH_TIMEOUT, REPO, calls, cluster_cmd, counting_wrappers, drive, last_run, wait_until

# The two tests of the module fixture `ignoring_run` (it submits a job once) share one worker
# under pytest -n --dist loadgroup; the others spread.
IGNORING_RUN = pytest.mark.xdist_group("command-jobs-ignoring-run")

CONTRACT = str(REPO / "examples/contract_train.py")
STEPS = 120
PACED = [sys.executable, CONTRACT, "--steps", "{steps}", "--lr", "{lr}", "--step-sleep", "0.25", "--margin", "45"]
TORQUE = ["--executor", "pbs", "--set", "scheduler.pbs_flavor=torque"]


def write_spec(directory: Path, name: str, command: list, **sections: dict) -> Path:
    data = {"name": name, "scheduler": {"max_requeues": 12, "signal_seconds": 0},
            "resources": {"queue": "cpu", "mem": "1G", "time": 1},
            "environment": {"tmpdir": str(directory / "tmp")}, "command": command,
            "vars": {"steps": STEPS, "lr": 0.1}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def reference(tmp: Path, steps: int = STEPS, lr: float = 0.1) -> dict:
    """The program's result uninterrupted, here, without a scheduler."""
    run_dir = tmp / f"reference-{steps}-{lr}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTER_")}
    env["CLUSTER_RUN_DIR"] = str(run_dir)
    subprocess.run([sys.executable, CONTRACT, "--steps", str(steps), "--lr", str(lr)], env=env, check=True,
                   capture_output=True, timeout=120)
    return json.loads((run_dir / "result.json").read_text())


def status_row(run: Run, cwd: Path) -> dict:
    proc = cluster_cmd("status", str(run.path), "--json", cwd=cwd, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[0]


def check_same_result(run: Run, tmp: Path) -> None:
    result = json.loads((run.path / "result.json").read_text())
    assert result == reference(tmp), "the interrupted run did not end where an uninterrupted one does"
    steps = [json.loads(line)["step"] for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, STEPS + 1, 10)), "a logged step was lost or repeated"


IGNORES = ("import sys, time; print('working away', flush=True); "
           "print('no checkpoints here', file=sys.stderr, flush=True); time.sleep(600)")


@pytest.fixture(scope="module")
def ignoring_run(slurm_cluster, tmp_path_factory) -> tuple[Run, Path]:
    """Submitted first (it needs the whole minute of walltime), checked last."""
    tmp = tmp_path_factory.mktemp("ignoring")
    spec = write_spec(tmp, "ignores", [sys.executable, "-c", IGNORES])
    proc = cluster_cmd("submit", str(spec), "--executor", "slurm", cwd=tmp, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return last_run(tmp), tmp


@pytest.mark.slurm
@IGNORING_RUN
def test_slurm_walltime_and_scontrol_requeue_end_like_an_uninterrupted_run(tmp_path: Path, ignoring_run) -> None:
    spec = write_spec(tmp_path, "contract", PACED)
    proc = cluster_cmd("submit", str(spec), "--executor", "slurm", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(tmp_path)
    job_id = run.current_job_id()
    assert run.read()["kind"] == "command"
    # Mid-run: the scheduler requeues the job (TERM); the program checkpoints and exits 75.
    wait_until(lambda: (run.path / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the program's first metrics line")
    sh.run(["scontrol", "requeue", job_id])
    record = drive(run, 420)
    assert record["state"] == "completed", record
    assert len(record["attempts"]) >= 3 and record["requeues"] == len(record["attempts"]) - 1
    check_same_result(run, tmp_path)
    logs = cluster_cmd("logs", str(run.path), cwd=tmp_path, timeout=60).stdout
    assert "cluster-train: stopped on SIGTERM with a checkpoint" in logs  # scontrol requeue
    assert "cluster-train: checkpointed (exit 75); requeueing job" in logs  # its own deadline
    assert "attempt 2: starting at step" in logs and "attempt 1: starting at step 0" in logs
    row = status_row(run, tmp_path)
    assert row["state"] == "completed" and row["requeues"] == record["requeues"]
    collected = cluster_cmd("collect", str(run.path), "--to", str(tmp_path / "out"), cwd=tmp_path, timeout=120)
    assert collected.returncode == 0, collected.stderr
    dest = tmp_path / "out" / run.id
    assert json.loads((dest / "result.json").read_text()) == json.loads((run.path / "result.json").read_text())
    assert (dest / "checkpoints" / "state.npz").is_file() and (dest / "metrics.jsonl").is_file()
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["hyperparameters"] == {"vars.steps": STEPS, "vars.lr": 0.1} and summary["complete"]
    if importlib.util.find_spec("matplotlib"):
        assert (dest / "curves.png").stat().st_size > 0  # from the program's metrics.jsonl
    assert "its files: checkpoints/state.npz, result.json" in collected.stdout


@pytest.mark.slurm
def test_torque_qsub_continues_in_new_jobs(tmp_path: Path) -> None:
    if not any(Path(p, "qsub").exists() for p in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("slurm-wlm-torque's qsub is not installed")
    spec = write_spec(tmp_path, "contract-pbs", PACED)
    proc = cluster_cmd("submit", str(spec), *TORQUE, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(tmp_path)
    record = drive(run, 420)
    assert record["state"] == "completed", record
    reasons = [job["reason"] for job in record["jobs"]]
    assert reasons[0] == "submit" and reasons[1:] and set(reasons[1:]) == {"continue"}, reasons
    check_same_result(run, tmp_path)
    assert "cluster-train: checkpointed (exit 75); continuing as job" in cluster_cmd(
        "logs", str(run.path), cwd=tmp_path, timeout=60).stdout


@pytest.mark.slow  # a paced program over several attempts
def test_local_executor_restarts_on_usr2(tmp_path: Path) -> None:
    # The local executor warns 48 s before its 1-minute timeout: USR2 12 s into each attempt,
    # forwarded to the program, which checkpoints and exits 75 (its own margin is off). On a
    # machine so loaded that an attempt's program was not yet running when the warning came
    # (USR2's default action then ends it, as it should), the warning comes later.
    command = [*PACED[:-1], "0"]
    for seconds in (48, 36, 24):
        work = tmp_path / f"warn-{seconds}"
        work.mkdir()
        spec = write_spec(work, "contract-local", command, scheduler={"kind": "local", "signal_seconds": seconds})
        proc = cluster_cmd("submit", str(spec), "--wait", cwd=work, timeout=600)
        run = last_run(work)
        attempts = len(run.read().get("attempts", []))
        logs = cluster_cmd("logs", str(run.path), cwd=work).stdout
        if proc.returncode == 0 or f"attempt {attempts}: starting at step" in logs:
            break
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = run.read()
    assert record["state"] == "completed" and record["scheduler"] == "local"
    assert record["requeues"] >= 1 and len(record["attempts"]) == record["requeues"] + 1
    check_same_result(run, work)
    assert "checkpointed (SIGUSR2); requeueing job" in logs


def _job_process(run: Run, timeout: float) -> int:
    """The pid of the run's job process (submitit's entry point) as soon as it exists."""
    wanted = f"submitit.core._submit\0{run.logs_dir}\0".encode()
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and wanted in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
        time.sleep(0.002)
    raise AssertionError(f"no job process for {run.path} within {timeout} s")


def _catches_usr2(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone: the signal would find nothing either way
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signal.SIGUSR2 - 1) & 1)


def test_a_usr2_before_the_program_starts_continues_the_run_without_starting_it(tmp_path: Path) -> None:
    # The warning comes while the job is still starting (importing, reading its spec): the
    # program is not started only to be ended by a signal it has no handler for yet. That
    # attempt ends as a checkpointed one would; the next one runs the program. Sent as soon as
    # the job's bootstrap records USR2, normally long before the program starts; a machine
    # slow enough to let the program start first is tried again.
    for tries in range(3):
        work = tmp_path / f"try-{tries}"
        work.mkdir()
        spec = write_spec(work, "early", [sys.executable, CONTRACT, "--steps", "{steps}", "--lr", "{lr}"],
                          scheduler={"kind": "local"})
        assert cluster_cmd("submit", str(spec), cwd=work).returncode == 0
        run = last_run(work)
        pid = _job_process(run, 120)
        wait_until(lambda: _catches_usr2(pid), 60, "the job's bootstrap", poll=0.002)
        os.kill(pid, signal.SIGUSR2)
        wait_until(lambda: run.read().get("state") in ("completed", "failed"), 300, "the run to end")
        logs = cluster_cmd("logs", str(run.path), cwd=work).stdout
        if "attempt 1: starting at step" not in logs:
            break
    record = run.read()
    assert record["state"] == "completed" and record["requeues"] == 1, record
    assert "cluster-train: SIGUSR2 before the command started" in logs
    assert "attempt 2: starting at step 0" in logs
    check_same_result(run, work)


AWKWARD = ["two words", "it's \"quoted\"", "$HOME ${{PATH}}", "`touch pwned`", "$(touch pwned)",
           "line one\nline two", "*", "{{braces}}", "", "; exit 9 &"]


def test_awkward_arguments_reach_the_program_through_submitit(tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    code = "import json, sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))".replace("{", "{{").replace("}", "}}")
    spec = write_spec(tmp_path, "awkward", [sys.executable, "-c", code, str(out), *AWKWARD, "{v}"],
                      scheduler={"kind": "local"}, vars={"v": "$(touch pwned) {v}"})
    proc = cluster_cmd("submit", str(spec), "--wait", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = [a.replace("{{", "{").replace("}}", "}") for a in AWKWARD]
    assert json.loads(out.read_text()) == [str(out), *expected, "$(touch pwned) {v}"]
    assert not list(tmp_path.rglob("pwned")), "a shell evaluated an argument"


@pytest.mark.slurm
def test_vars_sweep_is_one_sbatch(tmp_path: Path) -> None:
    path, log = counting_wrappers(tmp_path / "bin", ["sbatch"])
    command = [sys.executable, CONTRACT, "--steps", "20", "--lr", "{lr}"]
    spec = write_spec(tmp_path, "cmdsweep", command, sweep={"vars.lr": [0.05, 0.1, 0.2]})
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "submit", str(spec), "--executor", "slurm",
                           "--wait"], cwd=tmp_path, env=dict(os.environ, PATH=path), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls(log) == {"sbatch": 1}
    sweep_dir = next((tmp_path / "runs").glob("cmdsweep-sweep-*"))
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [t["job_id"] for t in sweep["tasks"]] == [f"{sweep['job_id']}_{i}" for i in range(3)]
    for task, lr in zip(sweep["tasks"], (0.05, 0.1, 0.2)):
        run_dir = sweep_dir / task["run_dir"]
        assert json.loads((run_dir / "result.json").read_text()) == reference(tmp_path, 20, lr)
        assert Run(run_dir).read()["command"][-1] == str(lr)


@pytest.mark.slurm
@IGNORING_RUN
def test_a_command_that_ignores_the_contract_gets_logs_state_and_a_diagnosis(ignoring_run) -> None:
    run, tmp = ignoring_run
    sh.wait_job(run.current_job_id(), timeout=240)
    wait_until(lambda: run.read().get("state") == "failed", 30, "the job to record its end")
    row = status_row(run, tmp)
    assert row["state"] == "timeout", row
    assert row["diagnosis"].startswith("hit the walltime without a checkpoint"), row
    assert "follow the contract" in row["action"] and "cluster resume" in row["action"]
    out = cluster_cmd("logs", str(run.path), cwd=tmp, timeout=60).stdout
    err = cluster_cmd("logs", str(run.path), "--err", cwd=tmp, timeout=60).stdout
    assert "working away" in out and "no checkpoints here" in err
    assert "command stopped by SIGTERM without a checkpoint" in err


def test_local_cancel_then_resume_finishes_exactly(tmp_path: Path) -> None:
    # No walltime: only `cluster cancel` (TERM, forwarded to the program) stops this run.
    command = [sys.executable, CONTRACT, "--steps", "{steps}", "--lr", "{lr}", "--step-sleep", "0.1"]
    spec = write_spec(tmp_path, "contract-cancel", command, scheduler={"kind": "local"},
                      resources={"time": None})
    proc = cluster_cmd("submit", str(spec), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(tmp_path)
    wait_until(lambda: (run.path / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the program's first metrics line")
    cancelled = cluster_cmd("cancel", str(run.path), cwd=tmp_path, timeout=60)
    assert cancelled.returncode == 0, cancelled.stderr
    wait_until(lambda: (run.path / "checkpoints" / "state.npz").exists(), 60, "the checkpoint written on TERM")
    wait_until(lambda: status_row(run, tmp_path)["state"] == "cancelled", 60, "status to say cancelled")
    assert not (run.path / "result.json").exists()
    resumed = cluster_cmd("resume", str(run.path), "--wait", cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_same_result(run, tmp_path)
    record = run.read()
    assert [job["reason"] for job in record["jobs"]] == ["submit", "resume"] and record["state"] == "completed"
    logs = cluster_cmd("logs", str(run.path), cwd=tmp_path).stdout
    assert "attempt 2: starting at step" in logs and "attempt 2: starting at step 0\n" not in logs


def test_local_vars_sweep_runs_every_task(tmp_path: Path) -> None:
    command = [sys.executable, CONTRACT, "--steps", "20", "--lr", "{lr}"]
    spec = write_spec(tmp_path, "localsweep", command, scheduler={"kind": "local"})
    proc = cluster_cmd("submit", str(spec), "--sweep", "vars.lr=0.05,0.2", "--wait", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sweep_dir = next((tmp_path / "runs").glob("localsweep-sweep-*"))
    tasks = json.loads((sweep_dir / "sweep.json").read_text())["tasks"]
    for task, lr in zip(tasks, (0.05, 0.2)):
        assert json.loads((sweep_dir / task["run_dir"] / "result.json").read_text()) == reference(tmp_path, 20, lr)


def test_a_failing_program_is_diagnosed_with_its_status_and_error(tmp_path: Path) -> None:
    code = "print('about to fail', flush=True); raise ValueError('lr must be positive')"
    spec = write_spec(tmp_path, "fails", [sys.executable, "-c", code], scheduler={"kind": "local"})
    proc = cluster_cmd("submit", str(spec), "--wait", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = status_row(last_run(tmp_path), tmp_path)
    assert row["state"] == "failed"
    assert row["diagnosis"] == "command exited with status 1 (last Python error: ValueError: lr must be positive)"
    assert "cluster logs" in row["action"]
    spec = write_spec(tmp_path, "missing", ["no-such-program-here", "--x"], scheduler={"kind": "local"})
    assert cluster_cmd("submit", str(spec), "--wait", cwd=tmp_path, timeout=120).returncode == 1
    row = status_row(last_run(tmp_path), tmp_path)
    assert row["diagnosis"].startswith("command cannot start 'no-such-program-here': No such file or directory")


def test_an_unhandled_usr2_is_diagnosed(tmp_path: Path) -> None:
    # The local executor's warning comes 12 s into the 1-minute walltime; the program ignores
    # the contract, so USR2's default action ends it.
    spec = write_spec(tmp_path, "no-handler", [sys.executable, "-c", IGNORES],
                      scheduler={"kind": "local", "signal_seconds": 48})
    proc = cluster_cmd("submit", str(spec), "--wait", cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = status_row(last_run(tmp_path), tmp_path)
    assert row["state"] == "failed"
    assert row["diagnosis"].startswith("command killed by SIGUSR2, the walltime warning, without a checkpoint"), row
    assert "scheduler.signal_seconds: 0" in row["diagnosis"]

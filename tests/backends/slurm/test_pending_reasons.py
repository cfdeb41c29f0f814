"""Why a pending Slurm job waits, and when the scheduler expects it to start.

The parsers replay real recorded output (fixtures/SOURCES.md says how each was made); the
Slurm tests make jobs wait on the real test cluster: for CPUs a blocker holds, for a begin
time, for a dependency, and check what ``cluster status`` says, in at most one sacct and one
squeue call per refresh.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest

from cluster.backends import slurm
from cluster.backends.base import JobInfo
from cluster.errors import SchedulerError

from support import slurm as sh
from support.runs import CLUSTER, REPO, calls, cluster_cmd, counting_wrappers, last_run, wait_until

FIXTURES = Path(__file__).parent / "fixtures"
SMOKE = str(REPO / "jobs/smoke.yaml")
IDS = ["4", "5", "6", "7_2", "8", "9", "10"]


def _waiting(found: dict[str, JobInfo]) -> dict[str, tuple[str, str, str]]:
    return {k: (v.state, v.reason, v.start_estimate) for k, v in found.items() if k in IDS}


# ---------------------------------------------------------------- parsers, from recorded output


def test_sacct_says_pending_but_not_why() -> None:
    found = slurm._for_ids(slurm._parse_sacct((FIXTURES / "sacct_pending.txt").read_text()), IDS)
    assert _waiting(found) == {
        "4": ("failed", "", ""), "5": ("running", "", ""), "6": ("pending", "", ""),
        "7_2": ("pending", "", ""),  # only inside the array's record 7_[0-3]
        "8": ("pending", "", ""), "9": ("pending", "", ""), "10": ("pending", "", ""),
    }


EXPECTED_WAITING = {
    "6": ("pending", "Resources", "2026-12-02T16:06:01"),
    "7_2": ("pending", "Resources", "2026-12-02T16:16:00"),
    "8": ("pending", "Dependency", ""),  # squeue: N/A, scontrol: StartTime=Unknown
    "9": ("pending", "BeginTime", "2026-12-02T16:56:02"),
    "10": ("pending", "BeginTime", "2026-12-02T15:57:28"),  # requeued: held back until then
}


def test_squeue_start_says_why_and_when() -> None:
    found = slurm._for_ids(slurm._parse_squeue_start((FIXTURES / "squeue_start_pending.txt").read_text()), IDS)
    assert _waiting(found) == EXPECTED_WAITING


def test_scontrol_says_why_and_when_without_accounting() -> None:
    found = slurm._for_ids(slurm._parse_scontrol((FIXTURES / "scontrol_pending.txt").read_text()), IDS)
    assert _waiting(found) == {"4": ("failed", "NonZeroExitCode", ""), "5": ("running", "", ""), **EXPECTED_WAITING}
    assert "7_[0-3]" in found  # the array's pending tasks share one line: JobId=7 ArrayTaskId=0-3


def test_scontrol_values_with_spaces_do_not_cut_the_line() -> None:
    # Shaped as recorded from `sbatch --hold --comment 'two words'` (scontrol show job -o, 22.05.8).
    line = ("JobId=18 JobName=wrap JobState=PENDING Reason=JobHeldUser Dependency=(null) StartTime=Unknown "
            "Comment=two words  StdErr=/dev/null StdIn=/dev/null Power= \n")
    info = slurm._parse_scontrol(line)["18"]
    assert (info.state, info.reason, info.start_estimate) == ("pending", "JobHeldUser", "")


@pytest.mark.parametrize("record, task, covered", [
    ("7_[0-3]", "2", True), ("7_[0-3]", "4", False), ("7_[0,2-3]", "1", False), ("7_[0,2-3]", "3", True),
    ("7_[1-15:2]", "5", True), ("7_[1-15:2]", "4", False), ("7_[0-9%2]", "9", True), ("8_[0-3]", "2", False),
])
def test_array_task_found_in_its_arrays_pending_record(record: str, task: str, covered: bool) -> None:
    found = slurm._for_ids({record: JobInfo(state="pending")}, [f"7_{task}"])
    assert (f"7_{task}" in found) == covered


@pytest.mark.parametrize("text", ["", "garbage\n", "6|not a time|Resources\n", "|||\n", "6|2026-13-45T99:00:00|\n",
                                  "6\n", "\x00|\x00|\x00\n"])
def test_bad_squeue_output_never_tracebacks(text: str) -> None:
    for info in slurm._parse_squeue_start(text).values():
        assert info.start_estimate == ""
    slurm._parse_scontrol(text)
    slurm._parse_sacct(text)
    slurm._for_ids(slurm._parse_squeue_start(text), ["6", "7_2"])


class Replay:
    """run_command replaying the recorded output of each command kind; counts the calls."""

    def __init__(self, squeue_rc: int = 0, squeue_error: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.squeue_rc, self.squeue_error = squeue_rc, squeue_error

    def __call__(self, cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
        self.calls.append(cmd)
        if cmd[0] == "squeue" and self.squeue_error:
            raise SchedulerError(cmd, 124, "no answer within 30 s")
        name = {"sacct": "sacct_pending.txt", "squeue": "squeue_start_pending.txt"}[cmd[0]]
        rc = self.squeue_rc if cmd[0] == "squeue" else 0
        return subprocess.CompletedProcess(cmd, rc, (FIXTURES / name).read_text() if rc == 0 else "", "")


def test_one_sacct_and_one_squeue_for_waiting_jobs(monkeypatch) -> None:
    replay = Replay()
    monkeypatch.setattr(slurm, "run_command", replay)
    found = slurm.slurm_jobs(IDS)
    assert [c[0] for c in replay.calls] == ["sacct", "squeue"]
    assert "7" in replay.calls[0][replay.calls[0].index("-j") + 1].split(",")  # the array's parent, for 7_[0-3]
    assert replay.calls[1][replay.calls[1].index("-j") + 1] == "10,6,7_2,8,9"  # the waiting ones only (ids_of sorts)
    assert _waiting(found) == {"4": ("failed", "", ""), "5": ("running", "", ""), **EXPECTED_WAITING}


def test_no_squeue_when_nothing_waits(monkeypatch) -> None:
    replay = Replay()
    monkeypatch.setattr(slurm, "run_command", replay)
    slurm.slurm_jobs(["4", "5"])
    assert [c[0] for c in replay.calls] == ["sacct"]


@pytest.mark.parametrize("replay", [Replay(squeue_rc=1), Replay(squeue_error=True)], ids=["exit-1", "no-answer"])
def test_squeue_failing_leaves_sacct_states(monkeypatch, replay: Replay) -> None:
    monkeypatch.setattr(slurm, "run_command", replay)
    assert _waiting(slurm.slurm_jobs(IDS))["6"] == ("pending", "", "")


# ---------------------------------------------------------------- on the real test cluster


def _status(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLUSTER, "status", "--runs-dir", str(workdir / "runs"), *args], cwd=workdir,
                          capture_output=True, text=True, env=env or dict(os.environ), timeout=60)


def _submit(workdir: Path, *sets: str) -> tuple[str, str]:
    """(run id, job id) of a smoke run submitted with ``--set`` ``sets``."""
    proc = cluster_cmd("submit", SMOKE, "--executor", "slurm", *[a for s in sets for a in ("--set", s)], cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(workdir)
    return run.id, run.read()["jobs"][-1]["job_id"]


@pytest.mark.slurm
def test_pending_reason_shown_for_a_job_that_cannot_start(tmp_path: Path) -> None:
    # One CPU of each node, sleeping, for 10 minutes: no node has the 4 CPUs the run asks for
    # until it ends (the backfill scheduler's estimate), while other jobs still fit beside it.
    sleep = tmp_path / "sleep.sh"
    sleep.write_text("#!/bin/sh\nsleep 600\n")
    blocker = sh.sbatch(sleep, "--partition=cpu", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1",
                        "--mem=10M", "--time=10", "--output=/dev/null")
    jobs = [blocker]
    try:
        sh.wait_state(blocker, ["RUNNING"], timeout=60)
        resources, job = _submit(tmp_path, "resources.cpus_per_task=4")
        jobs.append(job)
        begin, job = _submit(tmp_path, "scheduler.extra_directives=[--begin=now+1hour]")
        jobs.append(job)
        dependency, job = _submit(tmp_path, f"scheduler.extra_directives=[--dependency=afterok:{blocker}]")
        jobs.append(job)

        path, log = counting_wrappers(tmp_path / "bin", ["sacct", "squeue", "scontrol", "sinfo"])
        counting = dict(os.environ, PATH=path)
        lines: dict[str, str] = {}

        def estimated() -> bool:  # the backfill scheduler runs every 5 s (bf_interval)
            log.write_text("")
            proc = _status(tmp_path, env=counting)
            assert proc.returncode == 0, proc.stderr
            counted = calls(log)
            assert counted.get("sacct", 0) <= 1 and counted.get("squeue", 0) <= 1 and sum(counted.values()) <= 2, counted
            lines.clear()
            lines.update({line.split(":", 1)[0]: line for line in proc.stdout.splitlines() if ": pending" in line})
            # Both: squeue may show an estimate while the reason is still None (not yet evaluated).
            line = lines.get(resources, "")
            return "start estimate" in line and ": pending (" in line

        wait_until(estimated, 60, f"a pending reason and start estimate for job {jobs[1]}", poll=1)
        print("\n".join(lines.values()))
        assert lines[resources].startswith(f"{resources}: pending (Resources), start estimate ") \
            or lines[resources].startswith(f"{resources}: pending (Priority), start estimate "), lines
        assert lines[begin].startswith(f"{begin}: pending (BeginTime), start estimate "), lines
        assert lines[dependency] == f"{dependency}: pending (Dependency)", lines

        rows = {r["run_id"]: r for r in json.loads(_status(tmp_path, "--json").stdout)}
        now = dt.datetime.now()
        for run_id in (resources, begin):
            assert rows[run_id]["state"] == "pending"
            assert dt.datetime.fromisoformat(rows[run_id]["start_estimate"]) > now - dt.timedelta(minutes=1)
        assert dt.datetime.fromisoformat(rows[begin]["start_estimate"]) > now + dt.timedelta(minutes=55)
        assert (rows[dependency]["wait_reason"], rows[dependency]["start_estimate"]) == ("Dependency", "")
    finally:
        for job in jobs:
            sh.scancel(job)


@pytest.mark.slurm
def test_no_squeue_call_when_no_job_waits(tmp_path: Path) -> None:
    _run_id, job = _submit(tmp_path)
    try:
        sh.wait_job(job, timeout=120)
        wait_until(lambda: sh.sacct_state(job) is not None, 30, f"sacct to know job {job}")
        path, log = counting_wrappers(tmp_path / "bin", ["sacct", "squeue", "scontrol", "sinfo"])
        proc = _status(tmp_path, env=dict(os.environ, PATH=path))
        assert proc.returncode == 0, proc.stderr
        assert calls(log) == {"sacct": 1}, calls(log)
        assert ": pending" not in proc.stdout
    finally:
        sh.scancel(job)

"""From the laptop, through a real sshd, to the real test Slurm: submit, status, logs, collect,
cancel, requeue, snapshots, one authentication per session, a lost connection under --follow.

The laptop is a git checkout of this project in a temporary directory (the test process, root);
the login node is the test user's home behind the test sshd (tests/remote/conftest.py). Files of
the remote side are read directly from the test user's home to check what the laptop shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from support import slurm as sh
from support.runs import FIRST_EPOCH_TIMEOUT, CLUSTER, REPO, calls, counting_wrappers, reference_sha, wait_until
from support.sshd import as_user

# One sshd, one test user and one sshd log (authentications are counted there): every remote
# test on one worker (the same xdist_group in both modules).
pytestmark = [pytest.mark.ssh, pytest.mark.slurm, pytest.mark.xdist_group("remote")]

HOST = "ct-test"
LONGER = ["train.epochs=10", "train.data.samples=20000"]
"""~15-30 s of training on the test cluster: long enough to requeue it in the middle."""
TICKER = """\
name: ticker
scheduler: {kind: auto}
resources: {queue: cpu, cpus_per_task: 1, mem: 1G, time: "00:05:00"}
command: [python3, -u, -c, "import sys, time\\nfor i in range(1, int(sys.argv[1]) + 1):\\n    print('tick', i, sys.argv[2], flush=True); time.sleep(0.2)", "{n}", "{msg}"]
vars: {n: 60, msg: plain}
"""


def laptop_cmd(laptop: Path, *args: str, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """``cluster ARGS`` on the laptop (the project copy is the cwd, so its code runs)."""
    return subprocess.run([*CLUSTER, *args], cwd=laptop, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def login_node(server, *args: str) -> subprocess.CompletedProcess:
    """The same ``cluster`` command run on the login node itself, as the test user."""
    python = str(server.home / "cluster-train" / "venv" / "bin" / "python")
    return as_user(server.user, "env", f"SLURM_CONF={os.environ['SLURM_CONF']}", python, "-m", "cluster.cli", *args)


def submitted(proc: subprocess.CompletedProcess) -> tuple[str, str, Path]:
    """(run id, job id, remote run directory) from cluster submit's output."""
    found = re.search(r"run (\S+): submitted to slurm as job (\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    remote = re.search(r"run directory: (\S+)", proc.stdout)
    assert remote, proc.stdout
    return found.group(1), found.group(2), Path(remote.group(1))


def sets(*items: str) -> list[str]:
    return [w for item in items for w in ("--set", item)]


def status_row(laptop: Path, run_id: str) -> dict:
    proc = laptop_cmd(laptop, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in json.loads(proc.stdout) if r["run_id"] == run_id]
    assert len(rows) == 1, proc.stdout
    return rows[0]


def test_submit_wait_then_status_logs_collect_authenticate_once(remote_venv, fresh_session, laptop, tmp_path):
    server = fresh_session
    before = server.authentications()
    proc = laptop_cmd(laptop, "submit", "jobs/smoke.yaml", "--host", HOST, "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id, job_id, remote_dir = submitted(proc)
    sha = reference_sha(REPO / "jobs/smoke.yaml", [])
    assert f"weights_sha256 {sha}" in proc.stdout
    assert json.loads((remote_dir / "summary.json").read_text())["weights_sha256"] == sha
    record = json.loads((laptop / "runs" / run_id / "remote.json").read_text())
    assert record["host"]["name"] == HOST and record["remote_run_dir"] == str(remote_dir)
    assert re.fullmatch(r"[0-9a-f]{64}", record["snapshot"]["hash"])
    assert re.fullmatch(r"[0-9a-f]{40}", record["git"]["commit"]) and isinstance(record["git"]["dirty"], bool)
    assert not (laptop / "runs" / run_id / "run.json").exists()  # never mistaken for a local run
    assert (server.home / "cluster-train").stat().st_mode & 0o777 == 0o700

    # status: five refreshes, the login node's own answer in the laptop's table
    ours = login_node(server, "status", "--json", str(remote_dir))
    assert ours.returncode == 0, ours.stderr
    theirs = json.loads(ours.stdout)[0]
    for _ in range(5):
        row = status_row(laptop, run_id)
        assert row["scheduler"] == f"slurm@{HOST}"
        for key in ("state", "job_id", "epoch", "epochs", "metric", "requeues"):
            assert row[key] == theirs[key], key
    table = laptop_cmd(laptop, "status")
    assert re.search(rf"{run_id}\s+smoke\s+slurm@{HOST}\s+{job_id}\s+completed", table.stdout), table.stdout

    # logs --follow on an ended run: what the login node prints, once
    follow = laptop_cmd(laptop, "logs", run_id, "--follow", timeout=120)
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout == login_node(server, "logs", str(remote_dir)).stdout
    assert "done: 3 epochs" in follow.stdout
    tail = laptop_cmd(laptop, "logs", run_id, "--follow", "--tail", "3", timeout=120)
    assert tail.returncode == 0 and tail.stdout.splitlines() == follow.stdout.splitlines()[-3:], tail.stdout

    collected = laptop_cmd(laptop, "collect", run_id, "--to", str(tmp_path / "results"))
    assert collected.returncode == 0, collected.stderr
    summary = json.loads((tmp_path / "results" / run_id / "summary.json").read_text())
    assert summary["weights_sha256"] == sha
    assert (tmp_path / "results" / run_id / "checkpoints" / "final.pt").is_file()
    assert f"from {HOST} into" in collected.stdout

    # one authentication for the submit, five status, one status table, two logs --follow and collect
    assert server.authentications() - before == 1, server.log.read_text()[-2000:]


def test_requeue_mid_run_resumes_bitwise_and_runs_the_submitted_snapshot(remote_venv, sshd_server, laptop):
    proc = laptop_cmd(laptop, "submit", "jobs/smoke.yaml", "--host", HOST, *sets(*LONGER))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id, job_id, remote_dir = submitted(proc)
    task = laptop / "train" / "tasks" / "seed_convnet.py"
    original = task.read_text()
    try:
        # The laptop's tree changes after submit: the queued and requeued job must not see it.
        task.write_text(original + "\nraise SystemExit('edited on the laptop after submit')\n")
        wait_until(lambda: (remote_dir / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the first epoch")
        sh.run(["scontrol", "requeue", job_id])
        sh.wait_state(job_id, ["PENDING"], timeout=30)
        sh.make_eligible(job_id)
        sh.wait_job(job_id, timeout=300)
        wait_until(lambda: status_row(laptop, run_id)["state"] == "completed", 60, "status to say completed")
    finally:
        task.write_text(original)
    record = json.loads((remote_dir / "run.json").read_text())
    assert record["requeues"] >= 1 and len(record["attempts"]) >= 2
    summary = json.loads((remote_dir / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", LONGER)
    epochs = [json.loads(l)["epoch"] for l in (remote_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 11))


def test_second_unchanged_submit_sends_nothing_and_hostile_values_stay_data(remote_venv, sshd_server, laptop,
                                                                             tmp_path):
    spec = laptop / "jobs" / "odd name $HOME 'q' `x`.yaml"
    spec.write_text(TICKER)
    hostile = "it's $(touch PWNED1) `touch PWNED2` \"q\" ;&| $HOME"
    args = ["submit", str(spec.relative_to(laptop)), "--host", HOST, *sets("vars.n=3", f"vars.msg={hostile}")]
    first = laptop_cmd(laptop, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"snapshot \w+: \d+ files( \(dirty\))?, sent [1-9]\d* files", first.stdout), first.stdout
    path, log = counting_wrappers(tmp_path / "wrappers", ["rsync", "ssh"])
    second = laptop_cmd(laptop, *args, env={"PATH": path})
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already there, nothing sent" in second.stdout
    assert calls(log).get("rsync", 0) == 0
    assert calls(log)["ssh"] <= 3  # prepare, submit (and at most one check for a user's master)
    runs = [submitted(p) for p in (first, second)]
    for run_id, job_id, remote_dir in runs:
        sh.wait_job(job_id, timeout=120)
        wait_until(lambda: status_row(laptop, run_id)["state"] == "completed", 60, "completed")
        out = laptop_cmd(laptop, "logs", run_id)
        assert f"tick 3 {hostile}" in out.stdout, out.stdout
        spec_there = yaml.safe_load((remote_dir / "spec.yaml").read_text())
        assert spec_there["vars"]["msg"] == hostile
    for where in (sshd_server.home, sshd_server.home / "cluster-train", *(r[2] for r in runs)):
        assert not list(where.glob("PWNED*")), where
    cancelled = laptop_cmd(laptop, "cancel", runs[0][0], runs[1][0])
    assert cancelled.returncode == 0 and cancelled.stdout.count("nothing live to cancel") == 2, cancelled.stdout


def test_cancel_then_resume_a_remote_run_from_the_laptop(remote_venv, sshd_server, laptop):
    proc = laptop_cmd(laptop, "submit", "jobs/smoke.yaml", "--host", HOST, *sets(*LONGER))
    run_id, job_id, remote_dir = submitted(proc)
    wait_until(lambda: (remote_dir / "metrics.jsonl").exists(), FIRST_EPOCH_TIMEOUT, "the first epoch")
    cancelled = laptop_cmd(laptop, "cancel", run_id)
    assert cancelled.returncode == 0 and f"cancelled job {job_id}" in cancelled.stdout, cancelled.stdout
    wait_until(lambda: status_row(laptop, run_id)["state"] == "cancelled", 60, "status to say cancelled")
    sh.wait_job(job_id, timeout=120)
    resumed = laptop_cmd(laptop, "resume", run_id, "--wait", timeout=900)
    assert resumed.returncode == 0 and "completed" in resumed.stdout, resumed.stdout + resumed.stderr
    summary = json.loads((remote_dir / "summary.json").read_text())
    assert summary["weights_sha256"] == reference_sha(REPO / "jobs/smoke.yaml", LONGER)
    assert status_row(laptop, run_id)["state"] == "completed"


def test_logs_follow_survives_a_lost_connection_without_a_line_twice_or_lost(remote_venv, sshd_server, laptop):
    (laptop / "jobs" / "ticker.yaml").write_text(TICKER)
    proc = laptop_cmd(laptop, "submit", "jobs/ticker.yaml", "--host", HOST)
    run_id, job_id, remote_dir = submitted(proc)
    sh.wait_state(job_id, ["RUNNING", "COMPLETED"], timeout=120)
    follow = subprocess.Popen([*CLUSTER, "logs", run_id, "--follow"], cwd=laptop, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    seen = []
    assert follow.stdout is not None
    for line in follow.stdout:
        seen.append(line)
        if line.startswith("tick 5 "):
            break
    sshd_server.stop()  # the login node's sshd and every session die
    time.sleep(2)
    sshd_server.start()
    # Read on through the same file object (communicate() would read the pipe beneath it and miss
    # what this one has buffered already).
    seen += list(follow.stdout)
    assert follow.wait(timeout=240) == 0, follow.stderr.read() if follow.stderr else ""
    shown = "".join(seen)
    ticks = [l for l in shown.splitlines() if l.startswith("tick ")]
    assert ticks == [f"tick {i} plain" for i in range(1, 61)], shown
    assert shown == login_node(sshd_server, "logs", str(remote_dir)).stdout


def test_a_snapshot_changed_on_the_login_node_stops_the_job_where_it_starts(remote_venv, sshd_server, laptop):
    """The hash is checked again where each attempt starts: a file of the snapshot changed after
    submit (here by root, on the login node) stops the requeued attempt with one line."""
    spec = laptop / "jobs" / "tamper.yaml"  # a tree of its own: no other test shares this snapshot
    spec.write_text(TICKER.replace("{n: 60", "{n: 150"))
    try:
        proc = laptop_cmd(laptop, "submit", "jobs/tamper.yaml", "--host", HOST)
    finally:
        spec.unlink()
    run_id, job_id, remote_dir = submitted(proc)
    snap = Path(json.loads((laptop / "runs" / run_id / "remote.json").read_text())["snapshot"]["path"])
    wait_until(lambda: "tick 3" in laptop_cmd(laptop, "logs", run_id).stdout, FIRST_EPOCH_TIMEOUT,
               "the first attempt to run")
    victim = snap / "README.md"
    victim.chmod(0o644)
    victim.write_text(victim.read_text() + "\nchanged on the login node\n")
    sh.run(["scontrol", "requeue", job_id])
    sh.wait_state(job_id, ["PENDING"], timeout=30)
    sh.make_eligible(job_id)
    sh.wait_job(job_id, timeout=180)
    wait_until(lambda: status_row(laptop, run_id)["state"] not in ("pending", "running", "requeued"), 60, "the end")
    err = laptop_cmd(laptop, "logs", run_id, "--err").stdout
    assert f"code snapshot {snap}" in err and "changed after submit" in err, err[-2000:]
    assert status_row(laptop, run_id)["state"] == "failed"


def test_a_master_connection_the_user_opened_is_used_and_no_new_login_made(remote_venv, sshd_server, laptop,
                                                                            tmp_path):
    """A site with two-factor login: the user opened a master with their own ssh config (ControlPath);
    cluster finds it with ssh -O check and rides on it instead of authenticating again."""
    import tempfile

    sockets = Path(tempfile.mkdtemp(prefix="ctu-", dir="/tmp"))
    config = tmp_path / "user_ssh_config"
    config.write_text(sshd_server.config.read_text() + f"  ControlPath {sockets}/%C\n")
    hosts = tmp_path / "hosts.yaml"
    entry = yaml.safe_load(Path(os.environ["CLUSTER_HOSTS"]).read_text())[HOST]
    hosts.write_text(yaml.safe_dump({HOST: {**entry, "ssh_config": str(config)}}))
    ours = Path(tempfile.mkdtemp(prefix="ctc-", dir="/tmp"))
    env = {"CLUSTER_HOSTS": str(hosts), "CLUSTER_SSH_CONTROL_DIR": str(ours)}
    subprocess.run(["ssh", "-F", str(config), "-o", "ControlMaster=yes", "-o", "ControlPersist=120", "-fN", HOST],
                   check=True, timeout=60)
    try:
        before = sshd_server.authentications()
        for _ in range(3):
            proc = laptop_cmd(laptop, "status", "--host", HOST, env=env)
            assert proc.returncode == 0, proc.stderr
        assert sshd_server.authentications() == before
        assert not list(ours.iterdir())  # no master of ours was opened
    finally:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", HOST], capture_output=True, timeout=30)

"""After a checkpointed stop the job goes on through its backend; when the scheduler refuses the
next job (sbatch/qsub fail), the run is failed with one line naming the way on, not left
``requeued`` forever with a traceback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from submitit.core.utils import UncompletedJobError

from cluster.backends.base import Backend
from cluster.backends.slurm import continuation_environment
from cluster.errors import SchedulerError
from cluster.job import continue_after_checkpoint
from cluster.spec import load_spec
from cluster.submit import prepare_run

from support.runs import REPO


class RefusingBackend(Backend):
    kind = "refusing"

    def continue_job(self, env, run, spec, remaining, say):
        say("continuing")
        raise SchedulerError(["sbatch"], 1, "sbatch: error: QOSMaxSubmitJobPerUserLimit\n")


def test_a_refused_continuation_fails_the_run_with_a_resume_hint(tmp_path, capsys):
    spec = load_spec(REPO / "jobs/smoke.yaml")
    run = prepare_run(spec, "slurm", tmp_path / "run")
    with pytest.raises(UncompletedJobError):
        continue_after_checkpoint(run, spec, RefusingBackend(), SimpleNamespace(job_id="7"), "SIGUSR2")
    record = run.read()
    message = ("checkpointed, but the job could not continue (sbatch failed (exit 1): sbatch: error: "
               f"QOSMaxSubmitJobPerUserLimit); continue with: cluster resume {run.path}")
    assert record["state"] == "failed" and record["error"] == message
    out, err = capsys.readouterr()
    assert out.splitlines() == ["cluster-train: checkpointed (SIGUSR2); continuing"]
    assert err.splitlines() == [f"cluster-train: {message}"]


@pytest.mark.parametrize("ended", ["cancelled", "failed"])
def test_a_sigterm_stop_keeps_an_end_recorded_before_it(tmp_path, ended):
    """`cluster cancel` (cancelled), or `cluster status` settling a run whose local controller
    was killed (failed), wrote the end while the trainer checkpointed on SIGTERM: it stays."""
    spec = load_spec(REPO / "jobs/smoke.yaml")
    run = prepare_run(spec, "local", tmp_path / "run")
    run.set_state(ended, error="the controller died")
    with pytest.raises(SystemExit) as stop:
        continue_after_checkpoint(run, spec, RefusingBackend(), SimpleNamespace(job_id="7"), "SIGTERM")
    assert stop.value.code == 0
    record = run.read()
    assert record["state"] == ended and record["error"] == "the controller died" and "stop_reason" not in record


def test_a_sigterm_stop_of_a_running_job_is_requeued_for_the_scheduler(tmp_path):
    spec = load_spec(REPO / "jobs/smoke.yaml")
    run = prepare_run(spec, "slurm", tmp_path / "run")
    run.set_state("running")
    with pytest.raises(SystemExit):
        continue_after_checkpoint(run, spec, RefusingBackend(), SimpleNamespace(job_id="7"), "SIGTERM")
    record = run.read()
    assert record["state"] == "requeued" and record["stop_reason"] == "SIGTERM"


def test_continuation_environment_keeps_the_cluster_and_drops_the_jobs_own():
    environ = {"SLURM_CONF": "/etc/slurm.conf", "SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "2",
               "MASTER_ADDR": "10.0.0.1", "RANK": "0", "PATH": "/bin", "SBATCH_ACCOUNT": "proj", "HOME": "/h"}
    assert continuation_environment(environ) == {"SLURM_CONF": "/etc/slurm.conf", "PATH": "/bin",
                                                 "SBATCH_ACCOUNT": "proj", "HOME": "/h"}

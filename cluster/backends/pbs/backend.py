"""The PBS backend (PBS Pro and Torque): what ``cluster`` asks of PBS, in one place.

The submitit plugin itself is :mod:`cluster.backends.pbs.executor`; this module adds the
directives, one ``qstat`` for every job of a flavour, ``qdel``, continuation jobs after a
checkpointed stop (PBS jobs cannot requeue themselves) and the doctor checks.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cluster.backends.base import Backend, Check, JobInfo, answers, run_command
from cluster.backends.pbs import script
from train.contract import LOGS_DIR

if TYPE_CHECKING:
    from cluster.backends.accounting import Usage
    from cluster.runs import Run
    from cluster.spec import JobSpec

COMMANDS = ("qsub", "qstat", "qdel")


def pbs_jobs(job_ids: list[str], flavor: str) -> dict[str, JobInfo]:
    """{job id: JobInfo}; a finished job whose outcome qstat does not say is ``ended``.

    ``ended`` lets the run's own record decide (completed, or failed when the job
    died without saying so), which is all Slurm's Torque wrapper allows: it shows
    ``C`` with no exit status for every finished job.
    """
    import logging

    from cluster.backends.pbs.watcher import PBSInfoWatcher  # submitit's watcher: only to query

    ids = [str(j) for j in job_ids]
    # qstat exits non-zero for jobs that left its history; the rows say what it means.
    logging.getLogger("cluster.backends.pbs.watcher").setLevel(logging.ERROR)
    watcher = PBSInfoWatcher(flavor, delay_s=0)
    for job_id in ids:
        watcher.register_job(job_id)
    watcher.update()
    found: dict[str, JobInfo] = {}
    for job_id in ids:
        info = watcher.get_info(job_id, mode="cache")
        state = info.get("NormalisedState") or "unknown"
        letter = info.get("job_state", "")
        if state == "unknown" and (letter in ("C", "F", "X") or info.get("LeftHistory") == "1"):
            state = "ended"
        found[job_id] = JobInfo(state=state, raw_state=letter or info.get("State", ""),
                                exit_code=info.get("ExitStatus", ""), reason=info.get("Reason", ""))
    return found


class PBSBackend(script.PBSScripts, Backend):
    kind = "pbs"
    detect_order = 20

    def available(self) -> bool:
        from cluster.backends.pbs.executor import pbs_answers  # the plugin's own test (affinity)

        return pbs_answers()

    def executor(self, spec: JobSpec, run_dir: Path, *, array_parallelism: int | None = None) -> Any:
        from cluster.backends.pbs.executor import PBSExecutor  # submitit: only when submitting

        return PBSExecutor(run_dir / LOGS_DIR, spec=spec, run_dir=run_dir)

    def query(self, job_ids: list[str], records: list[dict[str, Any]]) -> dict[str, JobInfo]:
        flavors = {r.get("pbs_flavor", "pbspro") for r in records if r.get("scheduler") == self.kind}
        found: dict[str, JobInfo] = {}
        for flavor in sorted(flavors or {"pbspro"}):
            found.update(pbs_jobs(job_ids, flavor))
        return found

    def accounting(self, job_ids: list[str], records: list[dict[str, Any]]) -> dict[str, list[Usage]] | None:
        from cluster.backends.pbs.usage import pbs_usage

        flavors = {r.get("pbs_flavor", "pbspro") for r in records if r.get("scheduler") == self.kind}
        found: dict[str, list[Usage]] = {}
        for flavor in sorted(flavors or {"pbspro"}):
            answer = pbs_usage(job_ids, flavor)
            if answer is None:
                return None
            found.update(answer)
        return found

    def cancel(self, job_id: str, run: Run) -> None:
        run_command(["qdel", job_id])

    def continue_job(self, env: Any, run: Run, spec: JobSpec, remaining: int,
                     say: Callable[[str], None]) -> str | None:
        """PBS jobs cannot requeue themselves: submit the continuation, which waits for us to end."""
        from cluster.backends.pbs.executor import continue_job

        return continue_job(env.job_id, os.environ["CLUSTER_SUBMITIT_FOLDER"])

    def doctor_checks(self, spec: JobSpec) -> list[Check]:
        missing = [c for c in COMMANDS if not shutil.which(c)]
        if missing:
            return [Check("FAIL", "scheduler", f"PBS commands missing: {', '.join(missing)}",
                          "load the PBS module or add its bin directory to PATH")]
        if not answers(["qstat", "-B"], timeout=15):
            return [Check("FAIL", "scheduler", "qstat -B does not answer", "is the PBS server up? try: qstat -B")]
        checks = [Check("ok", "scheduler", f"PBS answers (qstat -B; flavour {spec.scheduler.pbs_flavor})")]
        if spec.scheduler.pbs_flavor == "pbspro":
            if answers(["qstat", "-x"], timeout=15):
                checks.append(Check("ok", "accounting", "qstat -x answers (job history)"))
            else:
                checks.append(Check("warn", "accounting", "qstat -x does not answer (no job history)",
                                    "ended jobs vanish from qstat; status then relies on the run directories"))
        return checks

    def probe_submit(self, script_path: Path) -> str:
        return run_command(["qsub", str(script_path)]).stdout.strip()

    def probe_state(self, job_id: str) -> str | None:
        proc = run_command(["qstat", "-f", job_id], timeout=20, check=False)
        match = re.search(r"job_state = (\w)", proc.stdout)
        if proc.returncode != 0 or not match or match.group(1) in ("C", "F"):
            return None
        return match.group(1)

    def inspect_hint(self, job_id: str) -> str:
        return f"qstat -f {job_id}"


BACKEND = PBSBackend()

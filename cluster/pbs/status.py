"""PBS job states for ``cluster status``: one ``qstat`` call for every job of a flavour."""

from __future__ import annotations

import logging
from typing import Iterable

from cluster.pbs.watcher import PBSInfoWatcher
from cluster.backends import JobInfo


def pbs_jobs(job_ids: Iterable[str], flavor: str) -> dict[str, JobInfo]:
    """{job id: JobInfo}; a finished job whose outcome qstat does not say is ``ended``.

    ``ended`` lets the run's own record decide (completed, or failed when the job
    died without saying so), which is all Slurm's Torque wrapper allows: it shows
    ``C`` with no exit status for every finished job.
    """
    ids = [str(j) for j in job_ids]
    # qstat exits non-zero for jobs that left its history; the rows say what it means.
    logging.getLogger("cluster.pbs.watcher").setLevel(logging.ERROR)
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

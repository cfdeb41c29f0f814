"""A submitit ``InfoWatcher`` that asks ``qstat`` about every watched job in one call.

Rules (why they matter: a wrong "done" makes submitit give up on a running job):

* A qstat call that fails, hangs past ``timeout_s`` or prints something
  unreadable is *no new information*: the previous info is kept, nothing is
  reported done or failed because of it.
* qstat answers with a non-zero exit code as soon as one of several ids is
  unknown, so its stdout is still read; the exit code alone decides nothing.
* A job qstat no longer knows has *left the scheduler's history* (Torque purges
  completed jobs after ``keep_completed``; PBS Pro after ``job_history_duration``;
  Slurm after ``MinJobAge``). It is reported as state ``UNKNOWN`` with
  ``info["LeftHistory"] == "1"``, and ``is_done`` is True for it: submitit's
  ``Job.done()`` then returns True and ``Job.result()`` judges the job by its
  result pickle (waiting up to ``Job._results_timeout_s`` for a slow file
  system, then raising ``UncompletedJobError`` that shows the job's stderr).

When is a job taken to have left history?

* when qstat says so on stderr (``Unknown Job Id ...``, PBS Pro and Torque), or
* with flavor "torque" only: when qstat printed nothing on stderr, exited 0 or
  153, and the job is simply absent. This is how Slurm's Torque wrapper answers
  for a job it has forgotten. It is not applied to array tasks: the wrapper
  lists a running Slurm array task under its own job number (``13``), never as
  ``11_0``, so a task's silence means nothing and the task stays ``UNKNOWN``
  until its result file appears.
"""

from __future__ import annotations

import logging
import subprocess
import time

from submitit.core import core

from cluster.backends.pbs.jobid import PBSJobId, PBSOutputError
from cluster.backends.pbs.qstat import parse_qstat_json, parse_qstat_text, qstat_command, unknown_job_ids
from cluster.backends.pbs.states import Flavor, status_from_attributes

__all__ = ["PBSInfoWatcher"]

log = logging.getLogger(__name__)

# submitit's own list (InfoWatcher.is_done) plus SUSPENDED: a suspended PBS job
# keeps its nodes and resumes; it is not done.
_INCOMPLETE = frozenset(
    {"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED", "SUSPENDED"}
)

_LEFT_HISTORY_REASON = "qstat no longer knows this job: it left the scheduler's history"


def _key(job_id: str) -> str:
    """Any accepted spelling of a job id -> the submitit key (``1234`` / ``1234_5``)."""
    try:
        return PBSJobId.parse(job_id).key
    except ValueError:
        return job_id


class PBSInfoWatcher(core.InfoWatcher):
    """Shared by all jobs of one flavor; refreshes them all with one qstat call.

    ``flavor`` is "pbspro" (``qstat -x -f -F json``) or "torque" (``qstat -f``;
    also Slurm's Torque wrapper). Job ids are submitit keys (``1234``,
    ``1234_5``); other spellings (``1234.server``, ``1234[5].server``) are
    accepted and mapped to them.
    """

    def __init__(self, flavor: Flavor = "pbspro", delay_s: int = 60, timeout_s: float = 60.0) -> None:
        if flavor not in ("pbspro", "torque"):
            raise ValueError(f"unknown PBS flavor {flavor!r}; expected 'pbspro' or 'torque'")
        super().__init__(delay_s=delay_s)
        self.flavor: Flavor = flavor
        self.timeout_s = timeout_s

    # ------------------------------------------------------------ registration / lookup
    def register_job(self, job_id: str) -> None:
        super().register_job(_key(job_id))

    def get_info(self, job_id: str, mode: str = "standard") -> dict[str, str]:
        return super().get_info(_key(job_id), mode=mode)

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        """submitit's state name for the job ("UNKNOWN" until qstat has said something)."""
        return self.get_info(job_id, mode=mode).get("State") or "UNKNOWN"

    def normalised_state(self, job_id: str, mode: str = "standard") -> str:
        """The project's state name for the job (see ``cluster.backends.pbs.states.NORMAL_STATES``)."""
        return self.get_info(job_id, mode=mode).get("NormalisedState") or "unknown"

    def left_history(self, job_id: str, mode: str = "cache") -> bool:
        """True once qstat has stopped knowing the job (judge it by its result file)."""
        return self.get_info(job_id, mode=mode).get("LeftHistory") == "1"

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        info = self.get_info(job_id, mode=mode)
        if info.get("LeftHistory") == "1":
            return True
        return (info.get("State") or "UNKNOWN").upper() not in _INCOMPLETE

    # ------------------------------------------------------------ the qstat call
    def _query_ids(self) -> dict[str, str]:
        """{submitit key: id to give qstat} for every registered job not yet finished."""
        parsed: dict[str, PBSJobId] = {}
        for key in sorted(self._registered - self._finished):
            try:
                parsed[key] = PBSJobId.parse(key).without_server()
            except ValueError:
                log.warning("Not watching %r: not a PBS/Torque job id", key)
        array_numbers = {jid.number for jid in parsed.values() if jid.array_index is not None}
        query = {}
        for key, jid in parsed.items():
            if jid.array_index is None and not jid.is_array and jid.number in array_numbers:
                jid = jid.parent  # the array as a whole, e.g. submitit's first job of an array
            query[key] = str(jid)
        return query

    def _make_command(self) -> list[str] | None:
        """The qstat call for the watched jobs (submitit's InfoWatcher asks for it)."""
        query = self._query_ids()
        if not query:
            return None
        return qstat_command(self.flavor, sorted(set(query.values())))

    def update(self) -> None:
        """Refresh all watched jobs with one qstat call (see the module docstring for the rules)."""
        query = self._query_ids()
        if not query:
            return
        command = qstat_command(self.flavor, sorted(set(query.values())))
        self._num_calls += 1
        log.debug("Call #%d - Command %s", self._num_calls, " ".join(command))
        try:
            proc = subprocess.run(command, capture_output=True, timeout=self.timeout_s, check=False)
            self._output = proc.stdout
            info = self.read_info(proc.stdout)
        except (OSError, subprocess.SubprocessError, PBSOutputError) as error:
            log.warning("Call #%d - qstat gave no usable answer, keeping the last known states: %s",
                        self._num_calls, error)
        else:
            self._apply(query, proc.returncode, proc.stderr.decode(errors="replace"), info)
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _apply(self, query: dict[str, str], returncode: int, stderr: str, info: dict[str, dict[str, str]]) -> None:
        self._info_dict.update(info)
        gone = {_key(job_id) for job_id in unknown_job_ids(stderr)}
        silent_answer = self.flavor == "torque" and returncode in (0, 153) and not stderr.strip()
        if silent_answer:
            gone |= {
                key for key, asked in query.items()
                if key not in info and "[" not in asked  # not array tasks nor arrays
            }
        for key in gone & set(query):
            previous = self._info_dict.get(key, {})
            self._info_dict[key] = {
                **previous,
                "JobID": key,
                "State": "UNKNOWN",
                "NormalisedState": "unknown",
                "LeftHistory": "1",
                "LastSeenState": previous.get("LastSeenState") or previous.get("State", ""),
                "Reason": _LEFT_HISTORY_REASON,
            }
        if returncode != 0 and not info and not gone:
            log.warning("Call #%d - qstat failed (exit %d), keeping the last known states: %s",
                        self._num_calls, returncode, stderr.strip()[-500:] or "no output")

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        """qstat's stdout -> {submitit key: info}; info holds qstat's own attributes plus
        ``JobID``, ``QstatID``, ``State`` (submitit), ``NormalisedState``, ``ExitStatus``, ``Reason``.
        Raises ``PBSOutputError`` when the output cannot be read at all."""
        records = parse_qstat_json(string) if self.flavor == "pbspro" else parse_qstat_text(string)
        info: dict[str, dict[str, str]] = {}
        for qstat_id, attrs in records.items():
            try:
                key = PBSJobId.parse(qstat_id).key
            except ValueError:
                log.warning("Ignoring qstat record with unreadable job id %r", qstat_id)
                continue
            status = status_from_attributes(self.flavor, attrs)
            entry: dict[str, str] = dict(attrs)
            entry.update(
                JobID=key,
                QstatID=qstat_id,
                State=status.submitit_state,
                NormalisedState=status.state,
                ExitStatus="" if status.exit_status is None else str(status.exit_status),
                Reason=status.reason,
            )
            info[key] = entry
        return info

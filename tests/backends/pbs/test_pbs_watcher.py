"""PBSInfoWatcher against a stand-in qstat that replays recorded/documented output.

The stand-in is a real executable on PATH, so the watcher's subprocess call,
exit codes, stderr and timeouts are exercised for real; only the scheduler is replaced.
"""

import os
import stat
from pathlib import Path

import pytest

from cluster.backends.pbs.watcher import PBSInfoWatcher

FIXTURES = Path(__file__).parent / "fixtures"

FAKE_QSTAT = """#!/bin/sh
d="$FAKE_QSTAT_DIR"
echo "$*" >> "$d/calls"
[ -f "$d/sleep" ] && sleep "$(cat "$d/sleep")"
[ -f "$d/stdout" ] && cat "$d/stdout"
[ -f "$d/stderr" ] && cat "$d/stderr" >&2
exit "$(cat "$d/rc" 2>/dev/null || echo 0)"
"""


class FakeQstat:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def answer(self, stdout: str = "", stderr: str = "", rc: int = 0, sleep: float | None = None) -> None:
        (self.dir / "stdout").write_text(stdout)
        (self.dir / "stderr").write_text(stderr)
        (self.dir / "rc").write_text(str(rc))
        if sleep is None:
            (self.dir / "sleep").unlink(missing_ok=True)
        else:
            (self.dir / "sleep").write_text(str(sleep))

    @property
    def calls(self) -> list[str]:
        path = self.dir / "calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def qstat(tmp_path, monkeypatch) -> FakeQstat:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "qstat"
    script.write_text(FAKE_QSTAT)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_QSTAT_DIR", str(tmp_path))
    return FakeQstat(tmp_path)


def _watch(flavor, *job_ids, **kwargs) -> PBSInfoWatcher:
    watcher = PBSInfoWatcher(flavor, **kwargs)
    for job_id in job_ids:
        watcher.register_job(job_id)
    return watcher


def test_pbspro_one_call_for_all_jobs(qstat):
    qstat.answer((FIXTURES / "pbspro_qstat_xf.json").read_text())
    watcher = _watch("pbspro", "101", "104.pbs", "106", "108", "108_0", "108_1")
    watcher.update()
    assert qstat.calls == ["-x -f -F json 101 104 106 108[0] 108[1] 108[]"]
    assert watcher.get_state("101", mode="cache") == "RUNNING"
    assert watcher.get_state("104", mode="cache") == "COMPLETED"
    assert watcher.get_state("104.pbs", mode="cache") == "COMPLETED"  # any spelling of the id
    assert watcher.get_state("106", mode="cache") == "TIMEOUT"
    assert watcher.normalised_state("106", mode="cache") == "timeout"
    assert watcher.get_info("106", mode="cache")["ExitStatus"] == "-29"
    assert watcher.get_state("108", mode="cache") == "RUNNING"  # the array as a whole (B)
    assert watcher.get_state("108_0", mode="cache") == "COMPLETED"
    assert watcher.get_state("108_1", mode="cache") == "RUNNING"
    assert watcher.is_done("104", mode="cache") and watcher.is_done("108_0", mode="cache")
    assert not watcher.is_done("101", mode="cache")

    # Finished jobs are not asked about again.
    watcher.update()
    assert qstat.calls[-1] == "-x -f -F json 101 108[1] 108[]"


def test_torque_text(qstat):
    qstat.answer((FIXTURES / "torque_qstat_f.txt").read_text())
    watcher = _watch("torque", "201", "204", "205", "207", "208_1")
    watcher.update()
    assert qstat.calls == ["-f 201 204 205 207 208[1]"]
    assert [watcher.get_state(j, mode="cache") for j in ("201", "204", "205", "207", "208_1")] == [
        "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "RUNNING"
    ]


@pytest.mark.parametrize(
    "answer",
    [
        {"stderr": "qstat: cannot connect to server pbs (errno=111)\n", "rc": 2},
        {"stderr": "qstat: Server pbs is busy, try later\n", "rc": 15034},
        {"stdout": "this is not JSON at all", "rc": 0},
        {"stdout": "", "rc": 1},
        {"sleep": 5},
    ],
    ids=["connection-refused", "busy", "garbage", "silent-failure", "timeout"],
)
def test_failed_qstat_keeps_the_previous_state(qstat, answer):
    qstat.answer((FIXTURES / "pbspro_qstat_xf.json").read_text())
    watcher = _watch("pbspro", "101", "102", timeout_s=1.0)
    watcher.update()
    assert watcher.get_state("101", mode="cache") == "RUNNING"

    qstat.answer(**{"stdout": (FIXTURES / "pbspro_qstat_xf.json").read_text(), **answer}
                 if "sleep" in answer else answer)
    watcher.update()
    assert len(qstat.calls) == 2
    assert watcher.get_state("101", mode="cache") == "RUNNING"
    assert watcher.get_state("102", mode="cache") == "PENDING"
    assert not watcher.is_done("101", mode="cache")
    assert not watcher.left_history("101")


def test_failed_first_qstat_leaves_jobs_unknown_not_done(qstat):
    qstat.answer(stderr="qstat: cannot connect to server pbs\n", rc=2)
    watcher = _watch("torque", "201")
    watcher.update()
    assert watcher.get_state("201", mode="cache") == "UNKNOWN"
    assert not watcher.is_done("201", mode="cache")


def test_job_that_left_history_is_unknown_and_done(qstat):
    qstat.answer((FIXTURES / "pbspro_qstat_xf.json").read_text())
    watcher = _watch("pbspro", "101", "555")
    watcher.update()
    assert watcher.get_state("555", mode="cache") == "UNKNOWN"
    assert not watcher.is_done("555", mode="cache")  # silence from PBS Pro proves nothing

    # One id unknown: PBS Pro says so on stderr and exits non-zero, yet prints the others.
    qstat.answer((FIXTURES / "pbspro_qstat_xf.json").read_text(), stderr="qstat: Unknown Job Id 555.pbs\n", rc=153)
    watcher.update()
    assert watcher.get_state("101", mode="cache") == "RUNNING"
    assert watcher.get_state("555", mode="cache") == "UNKNOWN"
    assert watcher.left_history("555")
    assert watcher.is_done("555", mode="cache")
    assert watcher.get_info("555", mode="cache")["Reason"].startswith("qstat no longer knows")


def test_slurm_wrapper_silence_means_left_history_except_for_array_tasks(qstat):
    # Recorded behaviour of slurm-wlm-torque's qstat: unknown ids are silently
    # skipped (exit 0 if anything was printed, 153 if nothing was).
    qstat.answer((FIXTURES / "slurm_torque_qstat_f_live.txt").read_text())
    watcher = _watch("torque", "9", "10", "11_0", "11_1", "77")
    watcher.update()
    assert qstat.calls == ["-f 10 11[0] 11[1] 77 9"]
    assert watcher.get_state("9", mode="cache") == "RUNNING"
    assert watcher.get_state("10", mode="cache") == "FINISHED"
    assert watcher.is_done("10", mode="cache")
    assert watcher.left_history("77") and watcher.is_done("77", mode="cache")
    for task in ("11_0", "11_1"):
        assert watcher.get_state(task, mode="cache") == "UNKNOWN"
        assert not watcher.is_done(task, mode="cache"), task

    qstat.answer("", rc=153)
    watcher.update()
    assert watcher.left_history("9")
    assert watcher.get_info("9", mode="cache")["LastSeenState"] == "RUNNING"
    assert not watcher.is_done("11_0", mode="cache")


def test_no_jobs_no_call(qstat):
    watcher = PBSInfoWatcher("pbspro")
    watcher.update()
    assert qstat.calls == []
    assert watcher._make_command() is None


def test_unknown_flavor():
    with pytest.raises(ValueError, match="pbspro"):
        PBSInfoWatcher("sge")  # type: ignore[arg-type]

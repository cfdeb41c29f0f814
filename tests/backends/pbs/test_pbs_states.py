"""job_state letters and exit statuses -> submitit's and the project's state names."""

import pytest

from cluster.backends.pbs.states import NORMAL_STATES, status_from_attributes, walltime_seconds


@pytest.mark.parametrize(
    "flavor, attrs, submitit_state, state",
    [
        ("pbspro", {"job_state": "Q"}, "PENDING", "pending"),
        ("pbspro", {"job_state": "Q", "run_count": "1"}, "REQUEUED", "requeued"),
        ("pbspro", {"job_state": "H"}, "PENDING", "pending"),
        ("pbspro", {"job_state": "W"}, "PENDING", "pending"),
        ("pbspro", {"job_state": "T"}, "PENDING", "pending"),
        ("pbspro", {"job_state": "R"}, "RUNNING", "running"),
        ("pbspro", {"job_state": "E"}, "COMPLETING", "running"),
        ("pbspro", {"job_state": "S"}, "SUSPENDED", "pending"),
        ("pbspro", {"job_state": "U"}, "SUSPENDED", "pending"),
        ("pbspro", {"job_state": "B"}, "RUNNING", "running"),
        ("pbspro", {"job_state": "M"}, "UNKNOWN", "unknown"),
        ("pbspro", {"job_state": "F", "Exit_status": "0"}, "COMPLETED", "completed"),
        ("pbspro", {"job_state": "X", "Exit_status": "0"}, "COMPLETED", "completed"),
        ("pbspro", {"job_state": "F", "Exit_status": "1"}, "FAILED", "failed"),
        ("pbspro", {"job_state": "F", "Exit_status": "137"}, "FAILED", "failed"),
        ("pbspro", {"job_state": "F", "Exit_status": "-29"}, "TIMEOUT", "timeout"),
        ("pbspro", {"job_state": "F", "Exit_status": "-27"}, "OUT_OF_MEMORY", "out-of-memory"),
        ("pbspro", {"job_state": "F", "Exit_status": "-20"}, "NODE_FAIL", "node-fail"),
        ("pbspro", {"job_state": "F", "Exit_status": "-1"}, "FAILED", "failed"),
        ("pbspro", {"job_state": "F", "Exit_status": "271"}, "CANCELLED", "cancelled"),
        ("pbspro", {"job_state": "F", "Exit_status": "265", "resources_used.walltime": "01:00:02",
                    "Resource_List.walltime": "01:00:00"}, "TIMEOUT", "timeout"),
        ("pbspro", {"job_state": "F", "Exit_status": "267"}, "FAILED", "failed"),  # SIGQUIT
        ("pbspro", {"job_state": "F", "comment": "Job deleted by alice"}, "CANCELLED", "cancelled"),
        ("torque", {"job_state": "C", "exit_status": "0"}, "COMPLETED", "completed"),
        ("torque", {"job_state": "C", "exit_status": "2"}, "FAILED", "failed"),
        ("torque", {"job_state": "C", "exit_status": "-11"}, "TIMEOUT", "timeout"),
        ("torque", {"job_state": "C", "exit_status": "-10"}, "OUT_OF_MEMORY", "out-of-memory"),
        ("torque", {"job_state": "C", "exit_status": "-10", "resources_used.walltime": "00:10:00",
                    "Resource_List.walltime": "00:10:00"}, "TIMEOUT", "timeout"),
        ("torque", {"job_state": "C", "exit_status": "271"}, "CANCELLED", "cancelled"),
        ("torque", {"job_state": "C"}, "FINISHED", "unknown"),  # Slurm's wrapper: no exit status
        ("torque", {"job_state": "R"}, "RUNNING", "running"),
        ("torque", {"job_state": "S"}, "SUSPENDED", "pending"),
        ("torque", {}, "UNKNOWN", "unknown"),
        ("torque", {"job_state": "Z"}, "UNKNOWN", "unknown"),
    ],
)
def test_status_from_attributes(flavor, attrs, submitit_state, state):
    status = status_from_attributes(flavor, attrs)
    assert (status.submitit_state, status.state) == (submitit_state, state)
    assert status.state in NORMAL_STATES


def test_exit_status_and_reason_are_kept():
    status = status_from_attributes("pbspro", {"job_state": "F", "Exit_status": "-29"})
    assert status.exit_status == -29
    assert "walltime" in status.reason
    held = status_from_attributes("pbspro", {"job_state": "H", "comment": "job held by user"})
    assert held.reason == "held: job held by user"


@pytest.mark.parametrize(
    "text, seconds",
    [("01:00:00", 3600), ("8760:00:00", 31536000), ("05:30", 330), ("42", 42), ("", None), ("Infinite", None)],
)
def test_walltime_seconds(text, seconds):
    assert walltime_seconds(text) == seconds

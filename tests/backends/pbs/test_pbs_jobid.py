"""Job ids as qsub prints them, and the submitit key each maps to."""

import pytest

from cluster.backends.pbs.jobid import PBSJobId, PBSOutputError, parse_qsub_output


@pytest.mark.parametrize(
    "text, number, index, is_array, server, key, canonical",
    [
        ("1234.server", 1234, None, False, "server", "1234", "1234.server"),
        ("1234.pbs01.example.org", 1234, None, False, "pbs01.example.org", "1234", "1234.pbs01.example.org"),
        ("1234[].server", 1234, None, True, "server", "1234", "1234[].server"),
        ("1234[5].server", 1234, 5, False, "server", "1234_5", "1234[5].server"),
        ("1234.torque-head", 1234, None, False, "torque-head", "1234", "1234.torque-head"),
        ("1234[]", 1234, None, True, None, "1234", "1234[]"),
        ("1234[7]", 1234, 7, False, None, "1234_7", "1234[7]"),
        ("13", 13, None, False, None, "13", "13"),  # Slurm's Torque-compatible qsub
        ("14_0", 14, 0, False, None, "14_0", "14[0]"),  # a Slurm array task
        ("  42.srv \n", 42, None, False, "srv", "42", "42.srv"),
    ],
)
def test_parse_job_id(text, number, index, is_array, server, key, canonical):
    job_id = PBSJobId.parse(text)
    assert (job_id.number, job_id.array_index, job_id.is_array, job_id.server) == (number, index, is_array, server)
    assert job_id.key == key
    assert str(job_id) == canonical


@pytest.mark.parametrize("text", ["", "abc", "12a", "1234[x].server", "1234[1-3]", "14_[0-3]", ".server", "1234..x"])
def test_parse_job_id_rejects_garbage(text):
    with pytest.raises(ValueError, match="not a PBS/Torque/Slurm job id"):
        PBSJobId.parse(text)


def test_parent_and_without_server():
    subjob = PBSJobId.parse("1234[5].server")
    assert str(subjob.parent) == "1234[].server"
    assert str(subjob.without_server()) == "1234[5]"
    with pytest.raises(ValueError):
        PBSJobId(1, array_index=2, is_array=True)


@pytest.mark.parametrize(
    "output, expected",
    [
        ("1234.server\n", "1234.server"),
        (b"5678[].pbs\n", "5678[].pbs"),
        ("13\n", "13"),
        ("qsub: warning: queue default used\n\n99.torque01\n\n", "99.torque01"),
    ],
)
def test_parse_qsub_output(output, expected):
    assert parse_qsub_output(output) == expected


@pytest.mark.parametrize("output", ["", "\n\n", "qsub: Job rejected by all possible destinations\n"])
def test_parse_qsub_output_garbage_carries_the_text(output):
    with pytest.raises(PBSOutputError) as info:
        parse_qsub_output(output)
    assert "qsub" in str(info.value)
    assert info.value.text == output
    if output.strip():
        assert "Job rejected" in str(info.value)

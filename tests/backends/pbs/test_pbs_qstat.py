"""qstat output (recorded or documented, see fixtures/SOURCES.md) -> per-job states."""

from pathlib import Path

import pytest

from cluster.backends.pbs.jobid import PBSOutputError
from cluster.backends.pbs.qstat import parse_qstat_json, parse_qstat_text, qstat_command, unknown_job_ids
from cluster.backends.pbs.states import status_from_attributes

FIXTURES = Path(__file__).parent / "fixtures"


def _states(flavor, records):
    return {job_id: status_from_attributes(flavor, attrs) for job_id, attrs in records.items()}


def test_pbspro_json_fixture_states():
    records = parse_qstat_json((FIXTURES / "pbspro_qstat_xf.json").read_text())
    states = {job_id: (s.letter, s.submitit_state, s.state, s.exit_status)
              for job_id, s in _states("pbspro", records).items()}
    assert states == {
        "101.pbs": ("R", "RUNNING", "running", None),
        "102.pbs": ("Q", "PENDING", "pending", None),
        "103.pbs": ("H", "PENDING", "pending", None),
        "104.pbs": ("F", "COMPLETED", "completed", 0),
        "105.pbs": ("F", "FAILED", "failed", 1),
        "106.pbs": ("F", "TIMEOUT", "timeout", -29),
        "107.pbs": ("F", "CANCELLED", "cancelled", 271),
        "108[].pbs": ("B", "RUNNING", "running", None),
        "108[0].pbs": ("X", "COMPLETED", "completed", 0),
        "108[1].pbs": ("R", "RUNNING", "running", None),
        "109.pbs": ("F", "TIMEOUT", "timeout", 271),
    }


def test_pbspro_json_is_flattened_to_strings_without_the_environment():
    attrs = parse_qstat_json((FIXTURES / "pbspro_qstat_xf.json").read_bytes())["101.pbs"]
    assert attrs["Resource_List.walltime"] == "01:00:00"
    assert attrs["resources_used.ncpus"] == "8"
    assert attrs["substate"] == "42"
    assert not any(name.startswith("Variable_List") for name in attrs)


def test_pbspro_invalid_json_is_repaired():
    records = parse_qstat_json((FIXTURES / "pbspro_qstat_bad.json").read_text())
    assert set(records) == {"301.pbs", "302.pbs"}
    assert records["301.pbs"]["job_state"] == "R"
    assert records["301.pbs"]["comment"].endswith('"fast lane"')
    assert status_from_attributes("pbspro", records["302.pbs"]).state == "completed"


def test_pbspro_json_tolerates_text_around_the_object():
    text = "qstat: warning: something\n" + (FIXTURES / "pbspro_qstat_xf.json").read_text() + "\n"
    assert len(parse_qstat_json(text)) == 11


@pytest.mark.parametrize("text", ["", "\n"])
def test_pbspro_empty_output_means_no_jobs(text):
    assert parse_qstat_json(text) == {}


def test_pbspro_json_without_jobs():
    assert parse_qstat_json('{"timestamp":1, "pbs_version":"23.06.06", "pbs_server":"pbs"}') == {}


@pytest.mark.parametrize(
    "text", ["qstat: cannot connect to server pbs (errno=111)", '{"Jobs": {"1.pbs": {', '{"Jobs": 3}']
)
def test_pbspro_garbage_raises_with_the_text(text):
    with pytest.raises(PBSOutputError) as info:
        parse_qstat_json(text)
    assert info.value.text == text


def test_torque_text_fixture_states():
    records = parse_qstat_text((FIXTURES / "torque_qstat_f.txt").read_text())
    states = {job_id: (s.letter, s.submitit_state, s.state, s.exit_status)
              for job_id, s in _states("torque", records).items()}
    assert states == {
        "201.torque01": ("R", "RUNNING", "running", None),
        "202.torque01": ("Q", "PENDING", "pending", None),
        "203.torque01": ("H", "PENDING", "pending", None),
        "204.torque01": ("C", "COMPLETED", "completed", 0),
        "205.torque01": ("C", "FAILED", "failed", 2),
        "206.torque01": ("C", "TIMEOUT", "timeout", -11),
        "207.torque01": ("C", "CANCELLED", "cancelled", 271),
        "208[1].torque01": ("R", "RUNNING", "running", None),
    }


def test_torque_continuation_lines_are_glued_back():
    attrs = parse_qstat_text((FIXTURES / "torque_qstat_f.txt").read_text())["201.torque01"]
    assert attrs["Error_Path"] == "login1.cluster:/home/alice/experiments/a-rather-long-directory-name/train-a.e201"
    assert attrs["Output_Path"].endswith("a-rather-long-directory-name/train-a.o201")
    assert attrs["exec_host"] == "node01/0-7"
    assert attrs["Resource_List.walltime"] == "01:00:00"
    assert "Variable_List" not in attrs
    assert attrs["submit_host"] == "login1.cluster"


def test_slurm_wrapper_recorded_output():
    live = _states("torque", parse_qstat_text((FIXTURES / "slurm_torque_qstat_f_live.txt").read_text()))
    assert {job_id: s.submitit_state for job_id, s in live.items()} == {
        "9": "RUNNING",
        "10": "FINISHED",  # exit 3, but the wrapper prints only C
        "13": "RUNNING",  # array task 11_0, under its own job number
        "12": "PENDING",  # held: the wrapper shows Q
        "11": "PENDING",
    }
    done = _states("torque", parse_qstat_text((FIXTURES / "slurm_torque_qstat_f_done.txt").read_text()))
    assert {s.submitit_state for s in done.values()} == {"FINISHED"}
    attrs = parse_qstat_text((FIXTURES / "slurm_torque_qstat_f_live.txt").read_text())["9"]
    assert attrs["Resource_List.walltime"] == "00:02:00"
    assert attrs["exec_host"] == "vm/1"


def test_unknown_job_ids_from_stderr():
    stderr = (
        "qstat: Unknown Job Id 17.pbs\n"
        "qstat: Unknown Job Id Error 18.torque01\n"
        "qstat: 19.pbs Job has finished, use -x or -H to obtain historical job information\n"
        "qstat: cannot connect to server pbs (errno=111)\n"
    )
    assert unknown_job_ids(stderr) == {"17.pbs", "18.torque01", "19.pbs"}
    assert unknown_job_ids(b"") == set()


def test_qstat_command():
    assert qstat_command("pbspro", ["1", "2[]"]) == ["qstat", "-x", "-f", "-F", "json", "1", "2[]"]
    assert qstat_command("torque", ["1"]) == ["qstat", "-f", "1"]
    with pytest.raises(ValueError):
        qstat_command("sge", ["1"])  # type: ignore[arg-type]

"""What a sweep writes per task, made cheap: the same spec text, the same validation, one pickle.

No scheduler: these check that the sweep's shortcuts give exactly what the plain way gives
(a task's spec.yaml is ``JobSpec.to_yaml``'s text; a point validated section by section is
the spec, or the error, that validating the whole spec gives) and that an array task finds
its own submission in the array's one pickle, under Slurm's and PBS's environments.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from submitit.core import utils

from cluster.backends.array_task import cut_own_pickle, shared_pickle
from cluster.errors import SpecError
from cluster.spec import JobSpec, SpecTexts, _set_dotted, apply_overrides, load_spec, spec_from_dict
from support.runs import REPO

SPECS = sorted((REPO / "jobs").glob("*.yaml"))
VALUES: list[Any] = [0, 1, 1.0, -1, 0.5, 1e-3, 2**70, True, None, "x", "cuda:0", [1, 2], [1.0, 2], {"a": 1}, {}]


def _validated_whole(spec: JobSpec, point: dict[str, Any]) -> JobSpec:
    """The plain way: the whole spec, with the point set, validated again."""
    data = spec.to_dict()
    data.pop("sweep", None)
    for key, value in point.items():
        _set_dotted(data, key.split("."), value, key, spec.source)
    return spec_from_dict(data, source=spec.source)


def _outcome(make: Any) -> Any:
    try:
        return make()
    except SpecError as err:
        return ("error", err.key, err.message, err.file)


def _keys(spec: JobSpec) -> list[str]:
    if spec.command:
        return [f"vars.{name}" for name, _ in spec.vars] + ["vars.new_name", "vars.bad-name"]
    return ["train.lr", "train.epochs", "train.seed", "train.batch_size", "train.device", "train.data.samples",
            "train.sampler.positive_weight", "train.checkpoint.keep", "train.options", "train.options.samples",
            "train.no_such_key"]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_a_point_validated_by_its_section_is_what_validating_the_whole_spec_gives(path: Path) -> None:
    spec = load_spec(path)
    texts = SpecTexts(spec)
    checked = 0
    for key in _keys(spec):
        for value in VALUES:
            point = {key: value}
            whole = _outcome(lambda: _validated_whole(spec, point))
            assert _outcome(lambda: apply_overrides(spec, point)) == whole, point
            if isinstance(whole, JobSpec):
                assert texts.of(whole) == whole.to_yaml(), point
                checked += 1
    assert checked >= 5  # some points are valid for every shipped spec


class _Data:
    """Anything with to_dict: SpecTexts reads specs through it alone."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data


def test_spec_texts_never_mistake_equal_values_of_other_types() -> None:
    base = {"name": "x", "train": {"lr": 1, "options": {"a": 1, "b": [1, 2]}, "flag": True}, "vars": {}}
    texts = SpecTexts(_Data(base))  # type: ignore[arg-type]
    variants = [{"lr": 1.0}, {"lr": True}, {"options": {"a": 1.0, "b": [1, 2]}}, {"options": {"a": 1, "b": [1.0, 2]}},
                {"flag": 1}, {"options": {"a": True, "b": [True, 2]}}, {"new": None}, {}]
    from cluster.spec import dump_yaml

    for change in variants:
        data = {**base, "train": {**base["train"], **change}}
        assert texts.of(_Data(data)) == dump_yaml(data), change  # type: ignore[arg-type]
    assert texts.of(_Data(base)) == dump_yaml(base)  # type: ignore[arg-type]


def test_spec_yaml_has_no_aliases_even_for_a_value_used_twice() -> None:
    from cluster.spec import dump_yaml

    shared = [1, 2]
    text = dump_yaml({"a": shared, "b": {"c": shared}})
    assert "&" not in text and "*" not in text
    assert text == dump_yaml({"a": [1, 2]}) + dump_yaml({"b": {"c": [1, 2]}})


def _array_folder(tmp_path: Path, array_id: str, count: int) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    tasks = [utils.DelayedSubmission(str.upper, f"task {i}") for i in range(count)]
    utils.cloudpickle_dump(tasks, shared_pickle(folder, array_id))
    return folder


ENVIRONMENTS = {
    "slurm": {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "907", "SLURM_ARRAY_JOB_ID": "900",
              "SLURM_ARRAY_TASK_ID": "7"},
    "pbspro": {"SUBMITIT_EXECUTOR": "pbs", "PBS_JOBID": "900[7].pbs-server", "PBS_ARRAY_INDEX": "7"},
    "torque": {"SUBMITIT_EXECUTOR": "pbs", "PBS_JOBID": "900[7].torque", "PBS_ARRAYID": "7"},
}


@pytest.mark.parametrize("scheduler", sorted(ENVIRONMENTS))
def test_an_array_task_cuts_its_own_submission_from_the_array_pickle(scheduler: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import cluster.backends.pbs  # noqa: F401  (registers the PBS job environment with submitit)

    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "PBS_JOBID", "PBS_ARRAY_INDEX",
                 "PBS_ARRAYID", "PBS_ARRAY_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ENVIRONMENTS[scheduler].items():
        monkeypatch.setenv(name, value)
    folder = _array_folder(tmp_path, "900", 10)
    monkeypatch.setenv("SUBMITIT_FOLDER", str(folder))
    cut_own_pickle(str(folder))
    own = folder / "900_7_submitted.pkl"  # the name submitit's entry point reads for this task
    assert utils.DelayedSubmission.load(own).result() == "TASK 7"
    assert sorted(p.name for p in folder.iterdir()) == ["900_7_submitted.pkl", "900_tasks.pkl"]

    # A requeued task keeps its own pickle (it may hold checkpointed state): nothing is cut again.
    utils.cloudpickle_dump(utils.DelayedSubmission(str.lower, "Checkpointed"), own)
    cut_own_pickle(str(folder))
    assert pickle.loads(own.read_bytes()).result() == "checkpointed"

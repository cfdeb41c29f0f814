"""A new scheduler costs one module: a toy backend, registered from here, renders and submits
through `cluster render` / `cluster submit` / `cluster status` / `cluster cancel`, with a fake
submission command on PATH. Nothing in cluster/ knows its name.
"""

from __future__ import annotations

import json
import re
import os
from pathlib import Path
from typing import Any

import pytest
from submitit.core import core

from cluster.isolate import job_command
from cluster import backends
from cluster.backends import Backend, JobInfo
from cluster.backends.base import run_command
from cluster.backends.script import build_script, quote
from cluster.cli import main

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "jobs/smoke.yaml")

FAKE_SUBMIT = """#!/bin/sh
# toysub SCRIPT: keep a copy of the script, answer with a job id
n=$(ls "$TOY_STATE"/*.sh 2>/dev/null | wc -l)
cp "$1" "$TOY_STATE/job-$((n + 1)).sh"
echo "toy-$((n + 1))"
"""
FAKE_CANCEL = """#!/bin/sh
echo "$1" >> "$TOY_STATE/cancelled"
"""


class ToyJob(core.Job):
    """submitit wants a job class of the executor's own."""


class ToyExecutor(core.PicklingExecutor):
    """A submitit executor whose submission command is `toysub SCRIPT`."""

    job_class = ToyJob

    def __init__(self, folder: Path, spec: Any) -> None:
        super().__init__(folder)
        self.spec = spec

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        return build_script(self.spec, BACKEND, "toy", command=[command]).text()

    @property
    def _submitit_command_str(self) -> str:
        return f"python3 -u -m submitit.core._submit {quote(str(self.folder))}"

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        return ["toysub", str(submission_file_path)]

    @staticmethod
    def _get_job_id_from_submission_command(string: bytes | str) -> str:
        return (string.decode() if isinstance(string, bytes) else string).strip()

    def _num_tasks(self) -> int:
        return 1


class ToyBackend(Backend):
    """Exactly what the registry's "Adding a scheduler" section lists, nothing more."""

    kind = "toy"
    dialects = ("toy",)
    prefix = "#TOY"
    detect_order = 50
    job_id_pattern = re.compile(r"toy-[0-9]+")

    def available(self) -> bool:
        return False  # never auto-detected: chosen with --executor / --scheduler

    def directives(self, spec: Any, options: Any, dialect: str) -> list[str]:
        res = spec.resources
        return [f"name={quote(options.job_name or spec.name)}", f"cpus={res.cpus_per_task}"]

    def executor(self, spec: Any, run_dir: Path, *, array_parallelism: int | None = None) -> ToyExecutor:
        return ToyExecutor(run_dir / "logs", spec)

    def query(self, job_ids: list[str], records: list[dict[str, Any]]) -> dict[str, JobInfo]:
        cancelled = Path(os.environ["TOY_STATE"], "cancelled")
        gone = set(cancelled.read_text().split()) if cancelled.exists() else set()
        return {j: JobInfo(state="cancelled" if j in gone else "pending", raw_state="TOY") for j in job_ids}

    def cancel(self, job_id: str, run: Any) -> None:
        run_command(["toycancel", job_id])


BACKEND = ToyBackend()


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("toysub", FAKE_SUBMIT), ("toycancel", FAKE_CANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TOY_STATE", str(state))
    monkeypatch.chdir(tmp_path)
    backends.register(BACKEND)
    yield state
    backends._REGISTERED.pop("toy", None)


def test_toy_backend_renders_and_submits(toy: Path, capsys: pytest.CaptureFixture) -> None:
    assert "toy" in backends.kinds() and "toy" in backends.script_names()
    assert main(["check", SMOKE, "--set", "scheduler.kind=toy"]) == 0  # the spec loader asks the registry
    assert "kind: toy" in capsys.readouterr().out
    assert main(["render", SMOKE, "--scheduler", "toy"]) == 0
    script = capsys.readouterr().out
    assert "#TOY name=smoke\n#TOY cpus=1\n" in script
    assert "export TMPDIR=" in script and job_command("python3", "train") in script  # the shared template did the rest

    assert main(["submit", SMOKE, "--executor", "toy"]) == 0
    out = capsys.readouterr().out
    assert "submitted to toy as job toy-1" in out
    run_dir = next((toy.parent / "runs").glob("smoke-*"))
    record = json.loads((run_dir / "run.json").read_text())
    assert record["scheduler"] == "toy" and record["jobs"][0]["job_id"] == "toy-1"
    submitted = (toy / "job-1.sh").read_text()
    assert submitted.startswith("#!/bin/bash\n\n#TOY name=smoke") and "submitit.core._submit" in submitted

    assert main(["status", str(run_dir), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["scheduler"], row["job_id"], row["state"]) == ("toy", "toy-1", "pending")

    assert main(["cancel", str(run_dir)]) == 0
    assert "cancelled job toy-1" in capsys.readouterr().out
    assert (toy / "cancelled").read_text().split() == ["toy-1"]

"""Command jobs without a scheduler: the spec's command:/vars: rules, and the rendered script,
run by bash here, hands every argument to the program unchanged (no shell reads it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.backends import render_script
from cluster.spec import load_spec
from support.runs import REPO, cluster_cmd

# Spaces, both quotes, $, backticks, a command substitution, a newline, a glob, a brace.
AWKWARD = ["two words", "it's \"quoted\"", "$HOME and ${PATH}", "`touch pwned-backtick`",
           "$(touch pwned-dollar)", "line one\nline two", "*", "{literal}", "-n", "", "; exit 9 &"]

DUMP_ARGS = "import json, sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))"


def write_spec(tmp_path: Path, body: dict) -> Path:
    data = {"name": "cmd", "scheduler": {"kind": "slurm"}, "environment": {"tmpdir": str(tmp_path / "tmp")},
            "output": {"runs_dir": str(tmp_path / "runs")}, **body}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("body", "expected"), [
    ({"command": ["python", "x.py", "{lr}"]}, "command[2]: unknown placeholder {lr} (vars defines: none"),
    ({"command": ["python", "{lr}"], "vars": {"rate": 1}}, "command[1]: unknown placeholder {lr} (vars defines: rate"),
    ({"command": ["python", "x.py"], "train": {"epochs": 2}}, "command: a spec has either train:"),
    ({"command": "python x.py --lr 1"}, "command: must be a list of arguments"),
    ({"command": []}, "command: must be a non-empty list"),
    ({"command": ["python", "a}b"]}, "command[1]: lone '}'"),
    ({"command": ["python", {"a": 1}]}, "command[1]: must be a string or number"),
    ({"vars": {"lr": 1}}, "vars: only for a command job"),
    ({"command": ["p"], "resources": {"tasks_per_node": 2}}, "resources.tasks_per_node: is 2 (allowed: 1 for a command"),
    ({"command": ["p"], "vars": {"1x": 1}}, "vars.1x: invalid name"),
    ({"command": ["p"], "vars": {"x": [1]}}, "vars.x: must be a string, number or boolean"),
    ({"command": ["p", "{x}"], "vars": {"x": 1}, "sweep": {"train.lr": [1, 2]}},
     "sweep.train.lr: sweep keys must be dotted keys under vars"),
])
def test_bad_command_specs_are_one_line_with_the_key(tmp_path: Path, body: dict, expected: str) -> None:
    spec = write_spec(tmp_path, body)
    proc = cluster_cmd("check", str(spec), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0], proc.stderr
    assert f"{spec}: {expected}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_placeholders_escapes_and_round_trip(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, {
        "command": ["python", "t.py", "--lr={lr}", "{{lr}}", "{name}-{flag}", 3],
        "vars": {"lr": 0.0003, "name": "a b", "flag": True}}))
    assert spec.argv() == ["python", "t.py", "--lr=0.0003", "{lr}", "a b-true", "3"]
    again = tmp_path / "again.yaml"
    again.write_text(spec.to_yaml())
    assert load_spec(again).argv() == spec.argv() and "train" not in spec.to_dict()


def test_rendered_script_passes_every_argument_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    escaped = [a.replace("{", "{{").replace("}", "}}") for a in AWKWARD]  # literal braces in items
    value = "${PATH} {v} `id` $(touch pwned-var)"  # a var's value is inserted as it is
    spec_path = write_spec(tmp_path, {"command": [sys.executable, "-c", DUMP_ARGS, str(out), *escaped, "{v}"],
                                      "vars": {"v": value}})
    script = render_script(load_spec(spec_path), "slurm").text()
    (tmp_path / "job.sh").write_text(script)
    # Run as the batch shell would, with no scheduler: the job id is the shell's pid.
    proc = subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(out.read_text()) == [str(out), *AWKWARD, value]
    assert not list(tmp_path.glob("pwned*")), "a shell evaluated an argument"
    run_dir = next((tmp_path / "runs").iterdir())
    assert load_spec(run_dir / "spec.yaml").argv()[4:] == [*AWKWARD, value]


def test_rendered_script_exports_the_contract(tmp_path: Path) -> None:
    code = ("import json, os, sys; json.dump({k: os.environ.get(k) for k in ('CLUSTER_RUN_DIR', "
            "'CLUSTER_CHECKPOINT_DIR', 'CLUSTER_DEADLINE', 'CLUSTER_ATTEMPT')}, open(sys.argv[1], 'w'))")
    out = tmp_path / "env.json"
    escaped = code.replace("{", "{{").replace("}", "}}")
    spec_path = write_spec(tmp_path, {"command": [sys.executable, "-c", escaped, str(out)],
                                      "resources": {"time": "00:05:00"}})
    (tmp_path / "job.sh").write_text(render_script(load_spec(spec_path), "torque").text())
    proc = subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    env = json.loads(out.read_text())
    run_dir = next((tmp_path / "runs").iterdir())
    assert env["CLUSTER_RUN_DIR"] == str(run_dir)
    assert env["CLUSTER_CHECKPOINT_DIR"] == str(run_dir / "checkpoints") and (run_dir / "checkpoints").is_dir()
    assert env["CLUSTER_ATTEMPT"] == "1" and int(env["CLUSTER_DEADLINE"]) > 0


def test_example_spec_checks(tmp_path: Path) -> None:
    proc = cluster_cmd("check", str(REPO / "jobs/command_example.yaml"), "--set", "vars.lr=0.5", cwd=REPO,
                       timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "examples/contract_train.py" in proc.stdout and "lr: 0.5" in proc.stdout

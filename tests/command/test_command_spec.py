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


# --- command[0] is a program: never a shell builtin, keyword or function --------------------

SHELL_WORDS = ["eval", ".", "source", "trap", "exec", "if", "function", "echo", "[[", "{{"]  # "{{" is "{"


@pytest.mark.parametrize("body", [
    *({"command": [word, "touch M"]} for word in SHELL_WORDS),
    {"command": ["{prog}", "touch M"], "vars": {"prog": "eval"}},  # checked once the placeholder is filled
    {"command": ["{a}{b}", "touch M"], "vars": {"a": "ev", "b": "al"}},
], ids=lambda body: "".join(body["command"][0]) + ("+vars" if "vars" in body else ""))
def test_a_shell_builtin_or_keyword_as_the_program_is_refused_by_check_and_submit(tmp_path: Path, body: dict) -> None:
    spec = write_spec(tmp_path, body)
    word = "eval" if "vars" in body else body["command"][0].replace("{{", "{")
    for command in (("check", str(spec)), ("submit", str(spec), "--executor", "local")):
        proc = cluster_cmd(*command, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{spec}: command[0]: {word!r} is a shell "), proc.stderr
    assert not (tmp_path / "M").exists() and not (tmp_path / "runs").exists()


def test_a_path_named_like_a_builtin_runs_as_that_file(tmp_path: Path) -> None:
    program = tmp_path / "eval"
    program.write_text(f"#!{sys.executable}\nimport sys; open(sys.argv[1], 'w').write('ran')\n")
    program.chmod(0o755)
    spec = load_spec(write_spec(tmp_path, {"command": ["./eval", str(tmp_path / "ran")]}))
    (tmp_path / "job.sh").write_text(render_script(spec, "slurm").text())
    proc = subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and (tmp_path / "ran").read_text() == "ran", proc.stderr


@pytest.mark.parametrize("word", ["eval", ".", "source", "trap", "exec", "if", "function", "{{"])
def test_the_rendered_script_runs_command0_as_a_program_even_unchecked(tmp_path: Path, word: str) -> None:
    """Past the check (a spec built in code), bash still runs no builtin or keyword: as with
    the local executor's execvp, a name that is no program on PATH is 'not found' (127; '.'
    is found as a directory, 126)."""
    import dataclasses

    spec = load_spec(write_spec(tmp_path, {"command": ["python3", "touch M"]}))
    spec = dataclasses.replace(spec, command=(word, "touch M"))
    (tmp_path / "job.sh").write_text(render_script(spec, "slurm").text())
    proc = subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode in (126, 127), proc.stdout + proc.stderr
    assert "exec: " in proc.stderr and not (tmp_path / "M").exists()


def test_an_exported_function_does_not_shadow_the_program(tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    spec = load_spec(write_spec(tmp_path, {"command": ["python3", "-c", DUMP_ARGS, str(out)]}))
    (tmp_path / "job.sh").write_text(render_script(spec, "slurm").text())
    env = {**__import__("os").environ, "BASH_FUNC_python3%%": "() { touch M; }"}
    proc = subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == [str(out)] and not (tmp_path / "M").exists()


def test_the_shell_words_are_this_bash_s_builtins_and_keywords() -> None:
    from cluster.shell_words import BASH_BUILTINS, BASH_KEYWORDS

    def compgen(flag: str) -> set[str]:
        return set(subprocess.run(["bash", "-c", f"compgen {flag}"], capture_output=True, text=True,
                                  check=True).stdout.split())

    assert compgen("-b") <= BASH_BUILTINS and compgen("-k") <= BASH_KEYWORDS

"""The ``cluster`` command as a whole: help for every command, and a light login-node path."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import build_parser, main
from support.runs import CLUSTER

REPO = Path(__file__).resolve().parents[1]


def subcommands() -> list[str]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def test_top_level_help_lists_commands_and_examples():
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0
    assert "example" in proc.stdout
    for name in subcommands():
        assert name in proc.stdout


def test_every_command_is_listed():
    assert {"check", "render"} <= set(subcommands())


@pytest.mark.parametrize("command", subcommands())
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out
    example = out.split("example:", 1)[1].strip().splitlines()[0]
    assert example.startswith(f"cluster {command}")


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "cluster check: the following arguments are required: spec (see cluster check --help)\n"


# What `check` and `render` import must stay small: a login node answers at once, and torch
# alone takes seconds to import. Run in a fresh interpreter, so that no other test's imports count.
PROBE = """
import json, sys
import cluster.cli
codes = [cluster.cli.main(argv) for argv in json.loads(sys.argv[1])]
heavy = sorted(m for m in ("torch", "numpy", "submitit", "matplotlib") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [
    ["check", "jobs/seed_convnet.yaml"],
    ["render", "jobs/seed_convnet.yaml"],
    ["render", "jobs/seed_convnet_pbspro.yaml", "--scheduler", "torque", "--set", "resources.nodes=2"],
    ["check", "jobs/smoke.yaml", "--set", "resources.nodes=0"],  # the error path too
], ids=["check", "render", "render-torque", "check-error"])
def test_check_and_render_do_not_import_torch_or_numpy(argv, tmp_path):
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([argv])], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["codes"] == [2 if "resources.nodes=0" in argv else 0]
    assert [m for m in report["heavy"] if m in ("torch", "numpy")] == []


def test_import_time_of_the_cli_has_no_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cluster.cli", "render", "jobs/seed_convnet.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "yaml" in imported  # the probe sees imports at all
    assert not imported & {"torch", "numpy"}


UNUSED_BY_RENDER = ("json", "subprocess", "select", "threading", "train.contract.rundir",
                    "train.contract.task_probe_process", "cluster.backends.accounting")
"""What `render` (and `check`) of a spec whose task is ours never uses: each costs every start
milliseconds, so the commands and code paths that use one import it themselves."""


def test_render_imports_none_of_what_it_does_not_use():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cluster.cli", "render", "jobs/seed_convnet.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "cluster.spec" in imported  # the probe sees imports at all
    assert sorted(imported & set(UNUSED_BY_RENDER)) == []


def test_a_library_warning_is_one_line_on_stderr(tmp_path: Path) -> None:
    # The cli configures no logging (a command that warns of nothing never imports it):
    # logging's last resort prints the "cluster" logger's warning as its message alone.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "sacct", "scontrol"):
        (bin_dir / name).write_text('#!/bin/sh\necho "slurm_load_jobs error: Unable to contact slurm controller" >&2\nexit 1\n')
        (bin_dir / name).chmod(0o755)
    run_dir = tmp_path / "run1"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": "run1", "name": "x", "scheduler": "slurm", "created": "2026-12-07T00:00:00+00:00",
        "state": "running", "jobs": [{"job_id": "123", "submitted": "2026-12-07T00:00:00+00:00", "reason": "submit"}],
        "attempts": [], "requeues": 0}))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([*CLUSTER, "status", str(run_dir)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.endswith("states of slurm runs come from their run directories\n"), proc.stderr
    assert "running" in proc.stdout


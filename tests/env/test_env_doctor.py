"""``cluster doctor`` on a venv spec: the free space of pip's temp dir (environment.tmpdir)
against a CUDA torch install, and the hint for a venv that is not built yet."""

from __future__ import annotations

from pathlib import Path

import pytest

import cluster.env
from cluster.cli import main

REPO = Path(__file__).resolve().parents[2]


def _doctor(tmp_path: Path, capsys, *sets: str) -> tuple[int, str]:
    spec = tmp_path / "job.yaml"
    spec.write_text(f"extends: {REPO / 'jobs/smoke.yaml'}\nscheduler: {{kind: local}}\n")
    args = ["doctor", str(spec), "--set", f"environment.venv={tmp_path}/venv"]
    for item in sets:
        args += ["--set", item]
    status = main(args)
    return status, capsys.readouterr().out


def test_doctor_reports_pip_temp_space_and_how_to_build_the_venv(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out = _doctor(tmp_path, capsys, f"environment.tmpdir={tmp_path}/pip/tmp")
    assert status == 1  # the venv is not built yet
    assert f"FAIL  python: {tmp_path}/venv/bin/python cannot" in out
    assert f"-> build environment.venv with: cluster env {tmp_path}/job.yaml" in out
    free = [line for line in out.splitlines() if line.startswith("ok    pip temp: ")]
    assert free == [f"ok    pip temp: {tmp_path}/pip/tmp (to be created, in {tmp_path}) [environment.tmpdir] has "
                    + free[0].split(" has ", 1)[1]], out
    assert free[0].endswith("GiB free; a CUDA torch install needs about 5 GiB")


def test_doctor_warns_when_pip_temp_is_too_small(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # More than any disk here has: the same statvfs, a need it cannot meet.
    monkeypatch.setattr(cluster.env, "TORCH_TEMP_BYTES", 2**60)
    status, out = _doctor(tmp_path, capsys, "environment.tmpdir=null")
    lines = out.splitlines()
    (i,) = [n for n, line in enumerate(lines) if line.startswith("warn  pip temp: ")]
    assert "[default temp dir: environment.tmpdir is null]" in lines[i]
    assert "needs about 1073741824 GiB" in lines[i]
    assert lines[i + 1].startswith("      -> set environment.tmpdir to a directory on a larger filesystem")


def test_cluster_env_refuses_to_update_a_broken_venv_in_one_line(tmp_path, capsys, monkeypatch):
    """A venv whose base Python is gone: pip cannot run in it, and python -m venv would keep the
    dangling link; cluster env says so before touching anything."""
    monkeypatch.chdir(tmp_path)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nonexistent/bin\n")
    (venv / "bin" / "python").symlink_to("/nonexistent/bin/python3.11")
    spec = tmp_path / "job.yaml"
    spec.write_text(f"extends: {REPO / 'jobs/smoke.yaml'}\nenvironment: {{venv: {venv}, tmpdir: {tmp_path}/t}}\n")
    assert main(["env", str(spec)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"cluster env: environment.venv: {venv}/bin/python does not run (No such file or directory), "
                                "so it cannot be updated (its base Python is gone or broken); remove "
                                f"{venv} and run cluster env again"]
    assert sorted(p.name for p in venv.iterdir()) == ["bin", "pyvenv.cfg"]

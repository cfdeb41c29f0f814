"""``cluster collect`` on run directories laid out as the toolkit and the trainer write them.

The runs here are built by hand (file formats of train/runfiles.py and cluster/runs.py):
collect reads files, so files are what it is tested on. Runs use the local executor's
record, so no scheduler is asked: a live run points at this test process's pid.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from cluster.collect import collect
from cluster.runs import Run
from cluster.spec import apply_overrides, load_spec

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEAD_PID = "999999999"  # above pid_max: never a live process


def metrics_lines(epochs: int, auc_end: float) -> list[dict]:
    return [{
        "epoch": e, "global_step": 19 * e, "train_loss": 0.7 / e, "val_loss": 0.75 / e + 0.05,
        "val_accuracy": 0.8 + 0.02 * e, "val_balanced_accuracy": 0.6 + 0.05 * e,
        "val_auc": auc_end - 0.05 * (epochs - e), "lr": 0.001, "epoch_seconds": 1.5, "time": 1764230000.0 + e,
    } for e in range(1, epochs + 1)]


def make_run(root: Path, run_id: str, *, epochs: int = 3, done: int = 3, auc_end: float = 0.8,
             live: bool = False, lr: float = 0.001, torn_line: bool = False) -> Run:
    """A run directory as submit + trainer leave it: ``done`` of ``epochs`` epochs finished."""
    run = Run(root / run_id)
    (run.path / "checkpoints").mkdir(parents=True)
    run.logs_dir.mkdir()
    spec = apply_overrides(load_spec(ROOT / "jobs" / "smoke.yaml"), {"train.lr": lr, "train.epochs": epochs})
    run.spec_path.write_text(spec.to_yaml())
    run.script_path.write_text("#!/bin/bash\n#SBATCH --job-name=smoke\necho train\n")
    job_id = str(os.getpid()) if live else DEAD_PID
    run.record_path.write_text(json.dumps({
        "run_id": run_id, "name": "smoke", "scheduler": "local", "created": "2026-11-27T10:15:00+00:00",
        "state": "running" if live else "completed",
        "jobs": [{"job_id": "4242", "submitted": "x", "reason": "submit"},
                 {"job_id": job_id, "submitted": "y", "reason": "resume"}],
        "attempts": [], "requeues": 1, "walltime_seconds": 600, "epochs": epochs, "spec": "spec.yaml",
    }))
    lines = metrics_lines(epochs, auc_end)[:done]
    text = "".join(json.dumps(m) + "\n" for m in lines)
    if torn_line:
        text += '{"epoch": 99, "val_au'
    (run.path / "metrics.jsonl").write_text(text)
    for step in (19, 38):
        (run.path / "checkpoints" / f"ckpt-{step:09d}.pt").write_bytes(os.urandom(2048))
    (run.path / "checkpoints" / "best.pt").write_bytes(b"best" + os.urandom(4096))
    (run.logs_dir / f"{job_id}_0_log.out").write_text("epoch 1/3 train_loss 0.7\n")
    (run.logs_dir / f"{job_id}_0_log.err").write_text("")
    (run.logs_dir / f"{job_id}_submitted.pkl").write_bytes(b"\x80\x04pickle")
    if not live and done == epochs:
        (run.path / "checkpoints" / "final.pt").write_bytes(b"final" + os.urandom(4096))
        last = lines[-1]
        (run.path / "summary.json").write_text(json.dumps({
            "status": "completed", "epochs": epochs, "steps": last["global_step"], "steps_per_epoch": 19,
            **{k: last[k] for k in ("train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_auc")},
            "best_epoch": epochs, "best_val_auc": last["val_auc"], "wall_seconds": 12.5,
            "samples_per_second": 640.0, "weights_sha256": "ab" * 32, "final_checkpoint": "checkpoints/final.pt",
        }, indent=2, sort_keys=True))
    return run


def test_collect_one_completed_run(tmp_path, capsys):
    run = make_run(tmp_path / "runs", "smoke-20261127-101500-ab12cd", lr=0.003)
    dest = tmp_path / "results"
    assert collect([str(run.path)], str(dest), print) == 0

    out = dest / run.id
    for name in ("checkpoints/final.pt", "checkpoints/best.pt", "metrics.jsonl", "spec.yaml", "submitted.sh",
                 "run.json", f"logs/{DEAD_PID}_0_log.out", f"logs/{DEAD_PID}_0_log.err", "summary.json",
                 "curves.png"):
        assert (out / name).is_file(), name
    for name in ("checkpoints/final.pt", "checkpoints/best.pt", "metrics.jsonl", "spec.yaml", "submitted.sh"):
        assert (out / name).read_bytes() == (run.path / name).read_bytes(), name
    # Rotating checkpoints and submitit's pickles are not results.
    assert not list(out.glob("checkpoints/ckpt-*")) and not list(out.glob("logs/*.pkl"))
    assert not (dest / "comparison.csv").exists()

    png = (out / "curves.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000

    own = json.loads((run.path / "summary.json").read_text())
    collected = json.loads((out / "summary.json").read_text())
    assert {k: collected[k] for k in own} == own
    assert collected["run_id"] == run.id and collected["name"] == "smoke"
    assert collected["state"] == "completed" and collected["complete"] is True
    assert collected["job_ids"] == ["4242", DEAD_PID] and collected["requeues"] == 1
    assert collected["hyperparameters"]["train.lr"] == 0.003
    assert collected["hyperparameters"]["train.sampler.positive_weight"] == 0.85
    assert "last_metrics" not in collected

    printed = capsys.readouterr().out
    assert run.id in printed and "val_auc 0.8000" in printed


def test_collect_twice_is_safe(tmp_path):
    run = make_run(tmp_path / "runs", "smoke-a")
    dest = tmp_path / "results"
    assert collect([str(run.path)], str(dest), print) == 0
    first = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file() and p.name != "summary.json"}
    assert collect([str(run.path)], str(dest), print) == 0
    second = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file() and p.name != "summary.json"}
    assert first.keys() == second.keys()
    assert {k: v for k, v in first.items() if k.name != "curves.png"} == \
        {k: v for k, v in second.items() if k.name != "curves.png"}
    assert not [p for p in dest.rglob(".*")], "temporary files left behind"

    # A changed source file is copied again, not skipped.
    (run.path / "checkpoints" / "best.pt").write_bytes(b"a newer best")
    assert collect([str(run.path)], str(dest), print) == 0
    assert (dest / run.id / "checkpoints" / "best.pt").read_bytes() == b"a newer best"


def test_collect_running_run_says_so(tmp_path, capsys):
    run = make_run(tmp_path / "runs", "smoke-live", epochs=5, done=2, live=True, torn_line=True)
    dest = tmp_path / "results"
    assert collect([str(run.path)], str(dest), print) == 0
    printed = capsys.readouterr().out
    assert "still running" in printed and "collect again when it ends" in printed

    out = dest / run.id
    assert (out / "checkpoints" / "best.pt").is_file() and not (out / "checkpoints" / "final.pt").exists()
    # Only complete lines: the trainer may be in the middle of appending one.
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    collected = json.loads((out / "summary.json").read_text())
    assert collected["state"] == "running" and collected["complete"] is False
    assert collected["last_metrics"] == json.loads(lines[-1])
    assert (out / "curves.png").read_bytes().startswith(PNG_SIGNATURE)


def test_collect_failed_run_without_metrics(tmp_path, capsys):
    run = make_run(tmp_path / "runs", "smoke-dead", epochs=3, done=0)
    run.update(lambda r: r.update(state="running"))  # the job died without recording its end
    dest = tmp_path / "results"
    assert collect([str(run.path)], str(dest), print) == 0
    printed = capsys.readouterr().out
    assert "failed" in printed and "without a summary" in printed
    collected = json.loads((dest / run.id / "summary.json").read_text())
    assert collected["last_metrics"] is None and collected["state"] == "failed"
    assert not (dest / run.id / "curves.png").exists()  # nothing to plot


def test_sweep_comparison_sorted_by_metric(tmp_path, capsys):
    sweep = tmp_path / "runs" / "smoke-sweep-20261127"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"name": "smoke", "keys": ["train.lr"]}))
    aucs = {"0": (0.71, 0.001), "1": (0.93, 0.003), "2": (0.82, 0.01)}
    for task, (auc, lr) in aucs.items():
        make_run(sweep, task, auc_end=auc, lr=lr)
    live = make_run(sweep, "3", epochs=5, done=1, live=True, auc_end=0.99, lr=0.03)  # val_auc 0.79 so far
    dest = tmp_path / "results"
    assert collect([str(sweep)], str(dest), print, metric="val_auc") == 0

    with open(dest / "comparison.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run_id"] for r in rows] == ["1", "2", live.id, "0"]
    assert [float(r["val_auc"]) for r in rows] == sorted((float(r["val_auc"]) for r in rows), reverse=True)
    assert rows[0]["train.lr"] == "0.003" and rows[2]["state"] == "running"
    assert "train.seed" not in rows[0]  # only hyper-parameters that differ between runs
    for task in aucs:
        assert (dest / task / "curves.png").is_file()

    printed = capsys.readouterr().out
    table = [l for l in printed.splitlines() if l.startswith(("run_id", "0 ", "1 ", "2 ", "3 "))]
    assert table[0].split()[:4] == ["run_id", "state", "epochs", "val_auc"]
    assert [l.split()[0] for l in table[1:]] == ["1", "2", "3", "0"]


def test_comparison_lower_is_better_for_loss(tmp_path):
    root = tmp_path / "runs"
    runs = [make_run(root, f"r{i}", auc_end=auc) for i, auc in enumerate((0.7, 0.9))]
    (runs[0].path / "summary.json").write_text(json.dumps({"val_loss": 0.2, "val_auc": 0.7}))
    (runs[1].path / "summary.json").write_text(json.dumps({"val_loss": 0.4, "val_auc": 0.9}))
    dest = tmp_path / "results"
    assert collect([str(r.path) for r in runs], str(dest), print, metric="val_loss") == 0
    with open(dest / "comparison.csv") as handle:
        assert [r["run_id"] for r in csv.DictReader(handle)] == ["r0", "r1"]


def test_without_matplotlib_the_plot_is_skipped(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an import finds when it is not installed
    run = make_run(tmp_path / "runs", "smoke-noplot")
    assert collect([str(run.path)], str(tmp_path / "results"), print) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("matplotlib")]
    assert len(lines) == 1 and "skipping curves.png" in lines[0]
    assert not (tmp_path / "results" / run.id / "curves.png").exists()
    assert (tmp_path / "results" / run.id / "summary.json").is_file()


def test_cli_collect(tmp_path):
    from cluster.cli import main

    run = make_run(tmp_path / "runs", "smoke-cli")
    assert main(["collect", str(run.path), "--to", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / run.id / "summary.json").is_file()
    assert main(["collect", str(tmp_path / "nope"), "--to", str(tmp_path / "out")]) == 1


@pytest.mark.parametrize("module", ["cluster.collect", "cluster.doctor"])
def test_login_node_modules_do_not_import_torch_or_numpy(module):
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

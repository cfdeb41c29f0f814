"""Training tasks other than the seed's: validation at `cluster check`, exact resume after
SIGUSR2, and the trainer options (optimizer, schedule, precision, clipping) resuming exactly."""

from __future__ import annotations

import dataclasses
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.tasks_support import PYTHON, REPO, TASKS, train_section, write_spec
from train.contract.config import OptimizerConfig, ScheduleConfig, TrainConfig
from train.optim import load_optimizer_state, make_optimizer
from train.testhooks import PAUSE_ENV
from train.trainer import Trainer

CHECK = """
import sys
from cluster.cli import main
rc = main(["check", sys.argv[1]])
print("TORCH-IMPORTED" if "torch" in sys.modules else "NO-TORCH")
sys.exit(rc)
"""


@pytest.mark.parametrize("train, key, says", [
    ({"task": "train.tasks.signal_cnn:SignalCN"}, "train.task", "has no attribute 'SignalCN'"),
    ({"task": "usertasks.nowhere:Regression"}, "train.task", "cannot import 'usertasks.nowhere'"),
    ({"task": "train.tasks.signal_cnn"}, "train.task", "must be 'package.module:ClassName'"),
    ({"task": "torchy.task:T"}, "train.task", "imports torch when it is imported"),
    ({"task": "train.tasks.signal_cnn:SignalCNN", "options": {"widht": 3}}, "train.options.widht", "unknown option"),
    ({"task": "train.tasks.signal_cnn:SignalCNN", "options": {"classes": 1}}, "train.options.classes", "at least 2"),
    ({"task": "train.tasks.signal_cnn:SignalCNN", "options": {"noise": "loud"}}, "train.options.noise", "must be a number"),
    ({"task": "usertasks.regress:Regression", "options": {"hidden": 0}}, "train.options", "hidden must be positive"),
    ({"task": "usertasks.regress:Regression", "data": {"samples": 10}}, "train.data", "only used by the seed task"),
    ({"optimizer": {"name": "adam", "momentum": 0.9}}, "train.optimizer.momentum", "only used with name: sgd"),
    ({"lr_schedule": {"kind": "cosin"}}, "train.lr_schedule.kind", "must be one of constant, cosine, step"),
    ({"precision": "fp8"}, "train.precision", "must be one of fp32, bf16, fp16"),
], ids=lambda v: v if isinstance(v, str) and "." in v and " " not in v else None)
def test_bad_task_or_option_is_one_line_at_check_and_torch_is_never_imported(
        train: dict, key: str, says: str, importable: Path, tmp_path: Path) -> None:
    (importable / "torchy").mkdir(exist_ok=True)
    (importable / "torchy" / "__init__.py").write_text("")
    (importable / "torchy" / "task.py").write_text("import torch\nclass T:\n    pass\n")
    spec = write_spec(tmp_path / "bad.yaml", train)
    proc = subprocess.run([PYTHON, "-c", CHECK, str(spec)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{spec}: {key}: ") and says in lines[0], proc.stderr
    # (The torch-importing module imported it in its own process, where it was refused.)
    assert proc.stdout.strip() == "NO-TORCH"


def test_a_good_task_spec_checks_without_torch_and_resolves_its_options(importable: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "good.yaml", train_section("external"))
    proc = subprocess.run([PYTHON, "-c", CHECK, str(spec)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "NO-TORCH" in proc.stdout
    assert "task: usertasks.regress:Regression" in proc.stdout and "hidden: 16" in proc.stdout


def test_a_user_task_checked_in_its_probe_trains_in_a_local_job(importable: Path, tmp_path: Path) -> None:
    """The login side validated the options in a subprocess (it holds no instance of the task's
    class); the job imports the task itself and trains with the same options."""
    from support.runs import cluster_cmd, last_run

    spec = write_spec(tmp_path / "user.yaml", train_section("external", epochs=1, options={"samples": 100,
                                                                                         "hidden": 4}),
                      environment={"tmpdir": None})
    proc = cluster_cmd("submit", str(spec), "--executor", "local", "--wait", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(tmp_path)
    assert run.read()["state"] == "completed"
    resolved = (run.path / "spec.yaml").read_text()
    assert "task: usertasks.regress:Regression" in resolved and "hidden: 4" in resolved


# --- exact resume after SIGUSR2, in `python -m train` ------------------------------------

# Where SIGUSR2 arrives (the process frozen there by the test hook, then continued), one
# after the other on the same run directory: before any step, in the middle of epoch 1's
# periodic checkpoint write (step 4), during epoch 2's validation.
STOPS = ["setup", "checkpoint-file@1", "validation@1"]


def _train(spec: Path, run_dir: Path, pause: str | None = None, timeout: float = 240) -> subprocess.Popen:
    import os

    env = dict(os.environ)
    env.pop(PAUSE_ENV, None)
    env.pop("CLUSTER_DEADLINE", None)
    if pause:
        env[PAUSE_ENV] = pause
    return subprocess.Popen([PYTHON, "-m", "train", "--config", str(spec), "--run-dir", str(run_dir)], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_stopped(proc: subprocess.Popen, timeout: float = 120) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the trainer never reached its pause point")


@pytest.mark.slow  # several stopped and resumed trainings
@pytest.mark.parametrize("task", list(TASKS))
def test_sigusr2_at_several_points_then_resume_is_bitwise_exact(task: str, importable: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", train_section(task))
    reference = tmp_path / "reference"
    done = _train(spec, reference)
    assert done.wait(timeout=240) == 0, done.stdout.read()
    expected = json.loads((reference / "summary.json").read_text())

    run = tmp_path / "run"
    for pause in STOPS:
        proc = _train(spec, run, pause)
        _wait_stopped(proc)
        proc.send_signal(signal.SIGUSR2)
        proc.send_signal(signal.SIGCONT)
        out = proc.communicate(timeout=240)[0]
        assert proc.returncode == 75 and "stopping (SIGUSR2)" in out, out
    last = _train(spec, run)
    out = last.communicate(timeout=240)[0]
    assert last.returncode == 0, out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["weights_sha256"] == expected["weights_sha256"]
    assert summary["resumes"] == len(STOPS) and summary["task"] == TASKS[task]["task"]
    strip = ("epoch_seconds", "time")
    metrics = [{k: v for k, v in json.loads(line).items() if k not in strip}
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [{k: v for k, v in json.loads(line).items() if k not in strip}
                       for line in (reference / "metrics.jsonl").read_text().splitlines()]


# --- the trainer options, each resuming exactly (in process) ------------------------------

OPTIONS = {
    "sgd-momentum-step": dict(optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4),
                              lr_schedule=ScheduleConfig(kind="step", step_size=7, gamma=0.5)),
    "adamw-cosine-warmup": dict(optimizer=OptimizerConfig(name="adamw", weight_decay=0.01, betas=(0.8, 0.99)),
                                lr_schedule=ScheduleConfig(kind="cosine", warmup_steps=5, min_factor=0.1)),
    "adam-clip-bf16": dict(grad_clip=0.5, precision="bf16"),
    "adam-fp16-scaler": dict(precision="fp16", grad_clip=1.0),  # CPU fp16 autocast + GradScaler("cpu")
}


@pytest.mark.slow  # several stopped and resumed trainings
@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_trainer_option_resumes_bitwise_exactly(name: str, importable: Path, tmp_path: Path) -> None:
    task = "signal" if name.startswith("sgd") else "external" if name.startswith("adamw") else "signal"
    base = TrainConfig.from_dict(train_section(task))
    config = dataclasses.replace(base, **OPTIONS[name])
    reference = Trainer(config, tmp_path / "reference", stream=io.StringIO()).run().summary
    for stop in (6, 17):
        assert Trainer(config, tmp_path / "run", stream=io.StringIO(), stop_at_step=stop).run().status == "stopped"
    resumed = Trainer(config, tmp_path / "run", stream=io.StringIO()).run().summary
    assert resumed["weights_sha256"] == reference["weights_sha256"] and resumed["resumes"] == 2
    assert resumed["precision"] == config.precision
    plain = Trainer(base, tmp_path / "plain", stream=io.StringIO()).run().summary
    assert plain["weights_sha256"] != reference["weights_sha256"]  # the option did change the training
    if config.precision == "fp16":
        state = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)
        assert state["scaler"]["scale"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the fp16/bf16 CUDA paths are "
                    "tested only on a GPU machine")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_precision_resumes(precision: str, importable: Path, tmp_path: Path) -> None:
    config = TrainConfig.from_dict(train_section("signal", device="cuda", precision=precision))
    reference = Trainer(config, tmp_path / "reference", stream=io.StringIO()).run().summary
    Trainer(config, tmp_path / "run", stream=io.StringIO(), stop_at_step=13).run()
    assert Trainer(config, tmp_path / "run", stream=io.StringIO()).run().summary["weights_sha256"] == \
        reference["weights_sha256"]


def test_optimizer_implementation_flags_never_come_from_the_checkpoint() -> None:
    """A GPU run's Adam state (fused: True on CUDA, capturable) loaded by a CPU run that built
    a foreach Adam: the flags stay this run's, the state (moments, step) is the checkpoint's."""
    model = torch.nn.Linear(3, 2)
    config = TrainConfig(device="cpu")
    saved = make_optimizer(model, config)
    model(torch.randn(4, 3)).sum().backward()
    saved.step()
    state = saved.state_dict()
    for group in state["param_groups"]:
        group.update(fused=None, foreach=True, capturable=True)  # as if hand-edited / written elsewhere
    here = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    load_optimizer_state(here, state)
    group = here.param_groups[0]
    assert (group["fused"], group["foreach"], group["capturable"]) == (None, False, False)
    assert torch.equal(here.state[model.weight]["exp_avg"], saved.state[model.weight]["exp_avg"])
    fused = make_optimizer(model, config)  # the trainer's own: fused on this CPU
    constructed = fused.param_groups[0]["fused"]
    state["param_groups"][0]["fused"] = not constructed
    load_optimizer_state(fused, state)
    assert fused.param_groups[0]["fused"] == constructed


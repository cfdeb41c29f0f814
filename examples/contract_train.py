"""A training script of your own, run as a command job (numpy only): the contract in a few lines.

Logistic regression by full-batch gradient descent on a seeded synthetic problem. What makes
it a good citizen of the cluster is the loop's last lines:

- ``stop_requested(margin)``: USR2 (the scheduler's warning), TERM (requeue, preemption) or
  less than ``margin`` seconds to the walltime (CLUSTER_DEADLINE);
- then save a checkpoint and ``sys.exit(EXIT_REQUEUE)``: the job is requeued (Slurm), continued
  in a new job (PBS) or restarted (local), and the next attempt resumes from the checkpoint.

The result depends only on the arguments, never on where the run was interrupted: the
checkpoint holds the weights and the step, and every step is a pure function of them.
``--step-sleep`` paces the steps (a stand-in for real work; it changes no number).

    cluster submit jobs/command_example.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time

import numpy as np

from train.contract import EXIT_REQUEUE, attempt, checkpoint_dir, run_dir, stop_requested, write_atomic


def problem(seed: int, samples: int = 512, features: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, features))
    y = (x @ rng.normal(size=features) + 0.5 * rng.normal(size=samples) > 0).astype(np.float64)
    return x, y


def loss_and_grad(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    eps = 1e-12
    loss = -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))
    return float(loss), x.T @ (p - y) / len(y)


def save(path, step: int, w: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, step=step, w=w)
    write_atomic(path, buffer.getvalue())  # complete or invisible, even if killed mid-write


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--margin", type=float, default=30.0, help="seconds kept for the save before the walltime")
    args = parser.parse_args()

    stop_requested()  # installs the USR2/TERM flag handlers now, before any signal can come
    x, y = problem(args.seed)
    ckpt = checkpoint_dir() / "state.npz"
    step, w = 0, np.zeros(x.shape[1])
    if ckpt.exists():
        with np.load(ckpt) as saved:
            step, w = int(saved["step"]), saved["w"].copy()
    print(f"attempt {attempt()}: starting at step {step}", flush=True)
    metrics = run_dir() / "metrics.jsonl"
    while step < args.steps:
        loss, grad = loss_and_grad(w, x, y)
        w = w - args.lr * grad
        step += 1
        if step % args.log_every == 0:
            with open(metrics, "a") as handle:
                handle.write(json.dumps({"epoch": step // args.log_every, "step": step, "train_loss": loss}) + "\n")
        time.sleep(args.step_sleep)
        if step < args.steps and stop_requested(args.margin):
            save(ckpt, step, w)
            print(f"checkpointed at step {step}; asking to be continued", flush=True)
            return EXIT_REQUEUE
    final_loss, _ = loss_and_grad(w, x, y)
    result = {"steps": step, "lr": args.lr, "final_loss": final_loss,
              "weights_sha256": hashlib.sha256(w.tobytes()).hexdigest()}
    write_atomic(run_dir() / "result.json", json.dumps(result, indent=2) + "\n")
    print(f"done: {json.dumps(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU checks of issue 16, as one script for a session that has a GPU (<= 10 minutes).

    .venv/bin/python tests/gpu/device_check.py --out "$OUT"          # on a machine with CUDA
    .venv/bin/python tests/gpu/device_check.py --device cpu --quick  # dry run of the script itself

It runs, each in a fresh process, and prints one line of figures per check (all of them
also in OUT/device_check.json):
1. the probe that `cluster doctor --probe` runs in every task (versions, arch list, a
   matrix product and a convolution on each GPU);
2. the seed job (jobs/seed_convnet.yaml, fp32) with `train.device: auto`: it must train on
   cuda:0, and summary.json says which determinism settings were in force;
3. a second uninterrupted run (run-to-run determinism) and a run stopped mid-epoch, then
   resumed by `python -m train`: bitwise equal to the first, or not (both are reported);
4. a 1-process NCCL group as `train.distributed.process_group` makes it (NCCL default
   group without device_id, gloo group beside it): an all-reduce on the GPU, a gloo
   barrier, DDP around the model for one step;
5. training samples/s of the trainer beside the tutorial's loop (DataLoader, per-batch
   host-to-device copies) on the same GPU.
Exit status 0 when every check passed, 1 otherwise; 3 when there is no CUDA (and no --device cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
STEP_TIMEOUT = 240


def run(args: list[str], env: dict | None = None, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def resolved_spec(folder: Path, overrides: list[str]) -> Path:
    sets = [a for o in overrides for a in ("--set", o)]
    proc = run([PYTHON, "-m", "cluster.cli", "check", "jobs/seed_convnet.yaml", *sets])
    if proc.returncode != 0:
        raise SystemExit(f"cluster check failed: {proc.stderr.strip()}")
    path = folder / "seed.yaml"
    path.write_text(proc.stdout)
    return path


def train(spec: Path, run_dir: Path, stop_at_step: int | None = None) -> dict:
    """python -m train on the spec (or a Trainer stopped at a step); its summary or status."""
    if stop_at_step is None:
        started = time.perf_counter()
        proc = run([PYTHON, "-m", "train", "--config", str(spec), "--run-dir", str(run_dir)])
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
        summary = json.loads((run_dir / "summary.json").read_text())
        return {**summary, "process_seconds": time.perf_counter() - started, "stderr": proc.stderr[-2000:]}
    code = ("import sys, io; from train.__main__ import load_config; from train.trainer import Trainer; "
            f"r = Trainer(load_config({str(spec)!r})[0], {str(run_dir)!r}, stream=io.StringIO(), "
            f"stop_at_step={stop_at_step}).run(); print(r.status)")
    proc = run([PYTHON, "-c", code])
    return {"status": proc.stdout.strip(), "error": proc.stderr.strip()[-500:] if proc.returncode else None}


PROBE = "from cluster.doctor import PROBE_PYTHON; exec(PROBE_PYTHON)"

NCCL = r'''
import os, torch, torch.distributed as dist
from torch import nn
from train.distributed import COLLECTIVE_TIMEOUT
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
device = torch.device("cuda", 0)
torch.cuda.set_device(device)
dist.init_process_group("nccl", rank=0, world_size=1, timeout=COLLECTIVE_TIMEOUT)
gloo = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
x = torch.ones(4, device=device)
dist.all_reduce(x)
before = torch.cuda.memory_allocated(device)
dist.barrier(group=gloo)
flags = torch.zeros(3, dtype=torch.int32)
dist.all_reduce(flags, group=gloo)
net = nn.parallel.DistributedDataParallel(nn.Linear(8, 2).to(device), device_ids=[0])
net(torch.ones(3, 8, device=device)).sum().backward()
print("nccl version:", ".".join(map(str, torch.cuda.nccl.version())))
print("all_reduce:", x.tolist(), "gloo barrier allocated on the GPU:", torch.cuda.memory_allocated(device) - before,
      "bytes; gloo group bound to:", getattr(gloo, "bound_device_id", None))
print("ddp step: ok")
dist.destroy_process_group()
'''

TUTORIAL = r'''
import sys, time, torch
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler
from train.__main__ import load_config
from train.data import load_data, stratified_split
from train.model import TwoInputConvNet
config = load_config(sys.argv[1])[0]
device = torch.device(sys.argv[2])
arrays = load_data(config.data, config.seed)
train_index, _ = stratified_split(arrays.label, config.data.val_fraction, config.seed)
t = arrays.subset(train_index)
dataset = TensorDataset(torch.from_numpy(t.image), torch.from_numpy(t.vector), torch.from_numpy(t.label))
weights = [0.85 if y == 1 else 0.1 for y in t.label]
loader = DataLoader(dataset, batch_size=config.batch_size,
                    sampler=WeightedRandomSampler(weights, num_samples=len(weights), replacement=True))
torch.manual_seed(config.seed)
model = TwoInputConvNet(t.image_shape, t.vector_features).to(device)
loss_fun, optimizer = torch.nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=config.lr)
samples, start = 0, time.perf_counter()
for _ in range(config.epochs):
    for D, G, L in loader:
        D, G, L = D.to(device), G.to(device), L.to(device)
        loss = loss_fun(model(D.float(), G.float()), L)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        samples += len(L)
if device.type == "cuda":
    torch.cuda.synchronize()
print(samples / (time.perf_counter() - start))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for device_check.json and the runs (default: a temporary one)")
    parser.add_argument("--device", default="auto", help="auto (default; needs CUDA) or cpu for a dry run")
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 30 (a dry run)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="device-check-"))
    out.mkdir(parents=True, exist_ok=True)
    import torch  # only here: the script's own process needs just the answer

    if args.device == "auto" and not torch.cuda.is_available():
        print(f"no CUDA here (torch {torch.__version__}, CUDA build {torch.version.cuda}): nothing to check on a GPU")
        return 3
    epochs = 2 if args.quick else 30
    overrides = [f"train.epochs={epochs}", f"train.device={args.device}"]
    spec = resolved_spec(out, overrides)
    results: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "epochs": epochs}
    ok = True

    def report(name: str, passed: bool, line: str) -> None:
        nonlocal ok
        ok &= passed
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {line}", flush=True)

    probe = run([PYTHON, "-c", PROBE])
    results["probe"] = probe.stdout
    print(probe.stdout, end="")
    report("probe", probe.returncode == 0 and "kernel: FAILED" not in probe.stdout
           and (args.device == "cpu" or "kernel: ok" in probe.stdout), f"exit {probe.returncode}")

    first = train(spec, out / "seed-1")
    results["seed"] = first
    determinism = first.get("determinism", {})
    expected = "cpu" if args.device == "cpu" else "cuda:0"
    report("seed job", first.get("device") == expected,
           f"device {first.get('device')}, {first.get('samples_per_second', 0):.0f} samples/s, "
           f"val_auc {first.get('val_auc')}, sha {str(first.get('weights_sha256'))[:16]}, "
           f"determinism {json.dumps(determinism)} {first.get('error') or ''}")

    second = train(spec, out / "seed-2")
    results["seed_again_sha"] = second.get("weights_sha256")
    steps = first.get("steps", 0)
    stop_at = steps // 2 + 7 if steps else 7
    stopped = train(spec, out / "stopped", stop_at_step=stop_at)
    resumed = train(spec, out / "stopped")
    results["stop_resume"] = {"stop_at_step": stop_at, "stopped": stopped, "sha": resumed.get("weights_sha256"),
                              "error": resumed.get("error")}
    run_to_run = second.get("weights_sha256") == first.get("weights_sha256")
    exact = resumed.get("weights_sha256") == first.get("weights_sha256")
    report("determinism", run_to_run and exact,
           f"two uninterrupted runs bitwise equal: {run_to_run}; stopped at step {stop_at} and resumed, bitwise "
           f"equal: {exact} ({stopped.get('status')}; {resumed.get('error') or 'resumed'})")
    warnings = [line for line in first.get("stderr", "").splitlines() if "deterministic" in line.lower()]
    if warnings:
        print("     nondeterministic ops warned:", *sorted(set(warnings))[:5], sep="\n       ")
    results["nondeterministic_warnings"] = warnings

    if args.device != "cpu":
        nccl = run([PYTHON, "-c", NCCL])
        results["nccl"] = nccl.stdout + nccl.stderr[-2000:]
        report("nccl 1-process group", nccl.returncode == 0 and "ddp step: ok" in nccl.stdout,
               " / ".join(nccl.stdout.strip().splitlines()) or nccl.stderr.strip()[-300:])

    tutorial = run([PYTHON, "-c", TUTORIAL, str(spec), expected])
    tutorial_sps = float(tutorial.stdout.strip()) if tutorial.returncode == 0 else None
    ours = first.get("samples") and first["samples"] / (first["train_seconds"] - first["validation_seconds"])
    results["samples_per_second"] = {"ours_without_validation": ours, "tutorial": tutorial_sps}
    report("throughput", tutorial_sps is not None and bool(ours),
           f"trainer {ours or 0:.0f} samples/s (validation excluded) vs tutorial loop {tutorial_sps or 0:.0f} "
           f"on {expected}: ratio {(ours / tutorial_sps) if ours and tutorial_sps else float('nan'):.2f}")

    (out / "device_check.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"{'all checks passed' if ok else 'some checks FAILED'}; details in {out / 'device_check.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

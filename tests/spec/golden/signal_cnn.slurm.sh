#!/bin/bash

#SBATCH --job-name=signal-cnn
#SBATCH --partition=cpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=00:10:00
#SBATCH --signal=B:USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append

# --- environment (rendered by cluster-train)
export TMPDIR="$HOME/tmp"
mkdir -p "$TMPDIR" || { echo "cluster-train: cannot create TMPDIR=$TMPDIR (fix environment.tmpdir)" >&2; exit 3; }
export CLUSTER_DEADLINE=$(( $(date +%s) + 600 ))

# --- run: the resolved spec travels inside this script
JOB_ID="${SLURM_JOB_ID:-${PBS_JOBID:-$$}}"
JOB_ID="${JOB_ID%%.*}"
RUN_DIR="${CLUSTER_RUN_DIR:-runs/signal-cnn-$JOB_ID}"
mkdir -p "$RUN_DIR"
if [ ! -e "$RUN_DIR/spec.yaml" ]; then
cat > "$RUN_DIR/spec.yaml" <<'CLUSTER_TRAIN_SPEC'
name: signal-cnn
scheduler:
  kind: auto
  pbs_flavor: pbspro
  slurm_gpu_flag: gres
  extra_directives: []
  skip_directives: []
  max_requeues: 3
  signal_seconds: 120
  max_node_failures: 2
  continuation: requeue
resources:
  queue: cpu
  account: null
  nodes: 1
  tasks_per_node: 1
  gpus_per_node: 0
  cpus_per_task: 1
  mem: 1G
  time: 00:10:00
environment:
  modules: []
  tmpdir: $HOME/tmp
  setup: []
  env: {}
  python: null
output:
  runs_dir: runs
train:
  seed: 0
  epochs: 5
  batch_size: 32
  lr: 0.003
  device: cpu
  task: train.tasks.signal_cnn:SignalCNN
  options:
    samples: 2000
    length: 64
    classes: 3
    channels: 8
    noise: 1.0
    dropout: 0.1
    val_fraction: 0.2
  optimizer:
    name: adamw
    lr: 0.003
    weight_decay: 0.01
    betas:
    - 0.9
    - 0.999
  lr_schedule:
    kind: cosine
    warmup_steps: 20
    min_factor: 0.0
  grad_clip: 1.0
  checkpoint:
    every_steps: 0
    every_minutes: 10.0
    keep: 3
    deadline_margin_seconds: 10.0
CLUSTER_TRAIN_SPEC
fi
python3 -c 'import sys; sys.path.remove('"'"''"'"') if '"'"''"'"' in sys.path else None; import signal, types; early = sys.modules.setdefault('"'"'_cluster_early_signals'"'"', types.ModuleType('"'"'_cluster_early_signals'"'"')); early.received = []; [signal.signal(s, lambda n, f, r=early.received: r.append(n)) for s in (signal.SIGUSR2, signal.SIGTERM)]; import runpy; runpy.run_module(sys.argv.pop(1), run_name='"'"'__main__'"'"', alter_sys=True)' train --config "$RUN_DIR/spec.yaml" --run-dir "$RUN_DIR" &
child=$!
# Forward the scheduler's warning to the trainer, which checkpoints at the next step.
trap 'kill -USR2 "$child" 2>/dev/null' USR2 TERM
wait "$child"; status=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
if [ "$status" -eq 75 ]; then
    if [ $(( ${SLURM_RESTART_COUNT:-0} + ${CLUSTER_CONTINUATIONS:-0} )) -ge 3 ]; then
        echo "cluster-train: checkpointed but out of requeues (3); continue with: cluster resume $RUN_DIR" >&2
    else
        echo "cluster-train: checkpointed; requeueing job $SLURM_JOB_ID" >&2
        scontrol requeue "$SLURM_JOB_ID" && exit 0
        echo "cluster-train: scontrol requeue refused; continuing through a dependency chain" >&2
        next=$(env -u SLURM_RESTART_COUNT CLUSTER_CONTINUATIONS=$(( ${CLUSTER_CONTINUATIONS:-0} + 1 )) CLUSTER_RUN_DIR="$RUN_DIR" sbatch --parsable --dependency=afterany:"$SLURM_JOB_ID" ${SLURM_ARRAY_TASK_ID:+--array=$SLURM_ARRAY_TASK_ID} "$0") &&
            { echo "cluster-train: checkpointed; continuing as job ${next%%;*}" >&2; exit 0; }
        echo "cluster-train: checkpointed, but no continuation could be submitted; continue with: cluster resume $RUN_DIR" >&2
    fi
fi

exit "$status"

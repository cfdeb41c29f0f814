#!/bin/bash

#PBS -N smoke
#PBS -q cpu
#PBS -l nodes=1:ppn=1
#PBS -l mem=1gb
#PBS -l walltime=00:10:00

# --- environment (rendered by cluster-train)
if [ -n "${PBS_O_WORKDIR:-}" ]; then cd "$PBS_O_WORKDIR"; fi
export TMPDIR="$HOME/tmp"
mkdir -p "$TMPDIR" || { echo "cluster-train: cannot create TMPDIR=$TMPDIR (fix environment.tmpdir)" >&2; exit 3; }
export CLUSTER_DEADLINE=$(( $(date +%s) + 600 ))

# --- run: the resolved spec travels inside this script
JOB_ID="${SLURM_JOB_ID:-${PBS_JOBID:-$$}}"
JOB_ID="${JOB_ID%%.*}"
RUN_DIR="${CLUSTER_RUN_DIR:-runs/smoke-$JOB_ID}"
mkdir -p "$RUN_DIR"
if [ ! -e "$RUN_DIR/spec.yaml" ]; then
cat > "$RUN_DIR/spec.yaml" <<'CLUSTER_TRAIN_SPEC'
name: smoke
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
  epochs: 3
  batch_size: 32
  lr: 0.001
  device: cpu
  data:
    source: synthetic
    samples: 600
    positive_fraction: 0.1
    image_shape:
    - 10
    - 18
    vector_features: 16
    val_fraction: 0.2
  sampler:
    positive_weight: 0.85
    negative_weight: 0.1
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
    echo "cluster-train: checkpointed before the walltime; continue with: qsub -v CLUSTER_RUN_DIR=$RUN_DIR <this script>, or: cluster resume $RUN_DIR" >&2
fi

exit "$status"

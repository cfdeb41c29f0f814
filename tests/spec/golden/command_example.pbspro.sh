#!/bin/bash

#PBS -N command-example
#PBS -q cpu
#PBS -l select=1:ncpus=1:mem=1gb:mpiprocs=1
#PBS -l walltime=00:10:00

# --- environment (rendered by cluster-train)
if [ -n "${PBS_O_WORKDIR:-}" ]; then cd "$PBS_O_WORKDIR"; fi
export TMPDIR="$HOME/tmp"
mkdir -p "$TMPDIR" || { echo "cluster-train: cannot create TMPDIR=$TMPDIR (fix environment.tmpdir)" >&2; exit 3; }
export CLUSTER_DEADLINE=$(( $(date +%s) + 600 ))

# --- run: the resolved spec travels inside this script
JOB_ID="${SLURM_JOB_ID:-${PBS_JOBID:-$$}}"
JOB_ID="${JOB_ID%%.*}"
RUN_DIR="${CLUSTER_RUN_DIR:-runs/command-example-$JOB_ID}"
mkdir -p "$RUN_DIR"
if [ ! -e "$RUN_DIR/spec.yaml" ]; then
cat > "$RUN_DIR/spec.yaml" <<'CLUSTER_TRAIN_SPEC'
name: command-example
scheduler:
  kind: auto
  pbs_flavor: pbspro
  slurm_gpu_flag: gres
  extra_directives: []
  skip_directives: []
  max_requeues: 10
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
command:
- python3
- examples/contract_train.py
- --steps
- '{steps}'
- --lr
- '{lr}'
- --margin
- '60'
vars:
  steps: 400
  lr: 0.1
CLUSTER_TRAIN_SPEC
fi
export CLUSTER_RUN_DIR="$RUN_DIR"
export CLUSTER_CHECKPOINT_DIR="$RUN_DIR/checkpoints"
mkdir -p "$CLUSTER_CHECKPOINT_DIR"
export CLUSTER_ATTEMPT=$(( ${SLURM_RESTART_COUNT:-0} + 1 ))
exec -- python3 examples/contract_train.py --steps 400 --lr 0.1 --margin 60 &
child=$!
# Forward the scheduler's warning and TERM to the program (the contract: checkpoint, exit 75).
trap 'kill -USR2 "$child" 2>/dev/null' USR2 TERM
wait "$child"; status=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
if [ "$status" -eq 75 ]; then
    echo "cluster-train: checkpointed before the walltime; continue with: qsub -v CLUSTER_RUN_DIR=$RUN_DIR <this script>, or: cluster resume $RUN_DIR" >&2
fi

exit "$status"

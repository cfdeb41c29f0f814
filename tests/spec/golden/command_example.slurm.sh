#!/bin/bash

#SBATCH --job-name=command-example
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
    if [ $(( ${SLURM_RESTART_COUNT:-0} + ${CLUSTER_CONTINUATIONS:-0} )) -ge 10 ]; then
        echo "cluster-train: checkpointed but out of requeues (10); continue with: cluster resume $RUN_DIR" >&2
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

#!/bin/bash

#PBS -N seed-convnet
#PBS -q gpu
#PBS -A proj-1
#PBS -l select=2:ncpus=8:ngpus=4:mem=4gb:mpiprocs=2
#PBS -l place=scatter
#PBS -l walltime=00:30:00
#PBS --constraint=a100

# --- environment (rendered by cluster-train)
if [ -n "${PBS_O_WORKDIR:-}" ]; then cd "$PBS_O_WORKDIR"; fi
if ! type module >/dev/null 2>&1; then
    for init in /etc/profile.d/modules.sh /usr/share/modules/init/bash \
                "${MODULESHOME:-/usr/share/modules}/init/bash" /etc/profile.d/lmod.sh; do
        if [ -r "$init" ]; then . "$init"; break; fi
    done
fi
module load cuda/11.1 || { echo "cluster-train: 'module load cuda/11.1' failed; stopping before training (fix environment.modules)" >&2; exit 3; }
export TMPDIR="$HOME/tmp"
mkdir -p "$TMPDIR" || { echo "cluster-train: cannot create TMPDIR=$TMPDIR (fix environment.tmpdir)" >&2; exit 3; }
export OMP_NUM_THREADS="4"
export DATA="${SCRATCH}/data"
export CLUSTER_DEADLINE=$(( $(date +%s) + 1800 ))
# setup lines from the spec (trusted input, run as written)
source venv/bin/activate

# --- run: the resolved spec travels inside this script
JOB_ID="${SLURM_JOB_ID:-${PBS_JOBID:-$$}}"
JOB_ID="${JOB_ID%%.*}"
RUN_DIR="${CLUSTER_RUN_DIR:-${SCRATCH}/runs/seed-convnet-$JOB_ID}"
mkdir -p "$RUN_DIR"
if [ ! -e "$RUN_DIR/spec.yaml" ]; then
cat > "$RUN_DIR/spec.yaml" <<'CLUSTER_TRAIN_SPEC'
name: seed-convnet
scheduler:
  kind: auto
  pbs_flavor: pbspro
  slurm_gpu_flag: gpus
  extra_directives:
  - --constraint=a100
  skip_directives:
  - mem
  - --requeue
  max_requeues: 3
  signal_seconds: 120
  max_node_failures: 2
  continuation: requeue
resources:
  queue: gpu
  account: proj-1
  nodes: 2
  tasks_per_node: 2
  gpus_per_node: 4
  cpus_per_task: 4
  mem: 4G
  time: 00:30:00
environment:
  modules:
  - cuda/11.1
  tmpdir: $HOME/tmp
  setup:
  - source venv/bin/activate
  env:
    OMP_NUM_THREADS: '4'
    DATA: ${SCRATCH}/data
  python: ~/venv/bin/python
output:
  runs_dir: ${SCRATCH}/runs
train:
  seed: 0
  epochs: 30
  batch_size: 32
  lr: 0.001
  device: auto
  data:
    source: synthetic
    samples: 4000
    positive_fraction: 0.1
    image_shape:
    - 10
    - 18
    vector_features: 64
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
"$HOME/venv/bin/python" -c 'import sys; sys.path.remove('"'"''"'"') if '"'"''"'"' in sys.path else None; import signal, types; early = sys.modules.setdefault('"'"'_cluster_early_signals'"'"', types.ModuleType('"'"'_cluster_early_signals'"'"')); early.received = []; [signal.signal(s, lambda n, f, r=early.received: r.append(n)) for s in (signal.SIGUSR2, signal.SIGTERM)]; import runpy; runpy.run_module(sys.argv.pop(1), run_name='"'"'__main__'"'"', alter_sys=True)' train --config "$RUN_DIR/spec.yaml" --run-dir "$RUN_DIR" &
child=$!
# Forward the scheduler's warning to the trainer, which checkpoints at the next step.
trap 'kill -USR2 "$child" 2>/dev/null' USR2 TERM
wait "$child"; status=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
if [ "$status" -eq 75 ]; then
    echo "cluster-train: checkpointed before the walltime; continue with: qsub -v CLUSTER_RUN_DIR=$RUN_DIR <this script>, or: cluster resume $RUN_DIR" >&2
fi

exit "$status"

#!/usr/bin/env bash
# Run every tests/benchmarks/bench_*.py in turn with the project's venv python.
#   bash tests/benchmarks/run_all.sh [args passed to each benchmark]
# Exit status: 0 when every benchmark exited 0, else 1 (all of them still run).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
if [ ! -x "$python" ]; then
    echo "run_all.sh: no venv python at $python (set PYTHON=...)" >&2
    exit 2
fi
cd "$repo" || exit 2
failed=()
shopt -s nullglob
for bench in "$here"/bench_*.py; do
    echo "=== ${bench#"$repo"/}"
    if ! "$python" "$bench" "$@"; then
        failed+=("${bench##*/}")
    fi
    echo
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "run_all.sh: failed or missed a target: ${failed[*]}" >&2
    exit 1
fi

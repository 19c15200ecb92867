#!/bin/bash
# The device checks of a GPU session, in one go (README, "On a GPU"): the CUDA tests (the compiled
# Triton kernels against the Python scan, and CUDA graphs against eager steps, included), a committed
# record retrained on this machine's CPU (~35 s), one scan timed Triton vs torch's ops, then the
# lecture grid's 40 runs (5 seeds) for one epoch on the GPU replaying CUDA graphs (kernels/cuda_graphs.py), on the
# same machine's CPU cores, and, where time is left, on the GPU with eager steps (on an H200 machine,
# before graphs: ~75 s of tests, ~125 s of eager GPU grid and ~65 s of CPU grid). Each grid is timed by
# benchmarks/time_grid.py, which appends a JSON line to $OUT/grid_times.jsonl: append its lines to
# results/gpu/grid_times.jsonl and `make tables` writes the README's figures from them (readings.gpu_reading).
# Needs python3 with torch (CUDA build), triton, pandas, scipy, scikit-learn, matplotlib, tqdm,
# pytest, and the SST trees in data/sst. Random vectors stand in for GloVe: the same compute.
# BUDGET (seconds, default 420): each grid is stopped where it would outrun it (recorded as stopped).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
[ -d data/sst ] && export SST_DIR=$PWD/data/sst
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
json=$out/grid_times.jsonl
t0=$(date +%s)
left() { echo $(( ${BUDGET:-420} - ($(date +%s) - t0) )); }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, torch.cuda.get_device_name(), '| triton', triton.__version__)"
python3 -m ablation.kernels.cpp > "$out/extension.log" 2>&1 &  # the CPU grid's C++ scan, built while the GPU works
build=$!
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_cell.py::test_cuda_matches_cpu \
  tests/test_triton.py::test_compiled_on_cuda_agrees_with_python_scan_on_cpu 2>&1 | tail -15
# #12's other machine: a committed record retrained on this machine's CPU, byte for byte (with this
# machine's torch, which may differ from the record's: then a difference is not conclusive)
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_numerics.py -k committed_record 2>&1 | tail -3
timeout 60 python3 benchmarks/bench_grid.py --triton --peephole diagonal --steps 200 --repeats 2 2>&1 | tail -3
grid() {  # device, workers, seconds allowed, then time_grid.py's flags (--set, --cuda-graphs)
  local device=$1 workers=$2 limit=$3
  shift 3
  python3 benchmarks/time_grid.py experiments/lecture.toml --device "$device" --seeds 5 --workers "$workers" \
    --set model.embeddings=random "$@" --json "$json" --timeout "$limit" --out "/tmp/lecture-$device-$(date +%s)"
}
grid cuda 5 $(( $(left) - 120 )) --cuda-graphs --set train.epochs=1
wait $build || { echo "the C++ extension did not build:"; tail -20 "$out/extension.log"; }
grid cpu 5 $(( $(left) - 10 )) --set train.epochs=1
[ "$(left)" -gt 100 ] && grid cuda 5 $(( $(left) - 10 )) --set train.epochs=1
echo "gpu_check: $(( $(date +%s) - t0 )) s"

#!/bin/bash
# The device checks of a GPU session, in one go (see README, "GPU"): the CUDA tests, then the
# lecture grid's packs on CUDA for two epochs with five worker processes sharing the GPU.
# Needs python3 with torch (CUDA build), pandas, scipy, scikit-learn, matplotlib, tqdm,
# pytest, and the SST trees in data/sst. Random vectors stand in for GloVe: same compute.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1  # the CUDA LSTM scan (triton_scan.py)
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_cell.py::test_cuda_matches_cpu 2>&1 | tail -5
python3 benchmarks/bench_grid.py --triton --steps 200 2>&1 | tail -3  # one scan: Triton kernels vs the Python scan
for device in cuda cpu; do  # the same work on the same machine: GPU, then its CPU cores
  start=$(date +%s.%N)
  python3 -m ablation.cli grid experiments/lecture.toml --device "$device" --workers 5 \
    --set model.embeddings=random --set train.epochs=2 --out "/tmp/lecture-$device" > "$out/grid-$device.log" 2>&1
  rc=$?
  echo "lecture grid, 40 runs x 2 epochs, $device, 5 worker processes: rc=$rc wall" \
    "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
done
python3 - <<'PY'
import json, glob
for device in ("cuda", "cpu"):
    s = [json.load(open(p)) for p in glob.glob(f"/tmp/lecture-{device}/*/summary.json")]
    if s:
        print(device, len(s), "runs on", s[0]["device"], "| mean test acc after 2 epochs",
              round(sum(x["test_acc"] for x in s if x["test_acc"]) / len(s), 2),
              "| mean pack wall", round(sum(x["wall_seconds"] for x in s) / len(s), 1), "s")
PY

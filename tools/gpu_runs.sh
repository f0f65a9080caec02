#!/usr/bin/env bash
# The GPU measurements of docs/performance.md, in one go, on one H100/H200.
#
# Here (once), in the repository root: fetch the wheels the GPU image lacks and carry the data.
#   mkdir -p .whl .gpu_data && cp /usr/share/datasets/fashion-mnist/*.gz .gpu_data/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       ml-collections tensorflow-datasets array-record immutabledict promise dm-tree toml \
#       simple-parsing docstring-parser
#   (.whl/ and .gpu_data/ are git-ignored; name both in the device call's carry.)
# There:
#   bash tools/gpu_runs.sh "$OUT"               # everything below; small results copied to $OUT
#   STAGE=bench bash tools/gpu_runs.sh "$OUT"   # only the benchmark suite (about 5 minutes)
# Runs, teachers and caches live in runs/gpu/ (git-ignored), which a warm machine keeps between calls.
#
# Stages: bench   the benchmark suite (DFAD R34->R18 at batch 256, WRN40-2->WRN16-1, LeNet pair;
#                 float32 and bfloat16; JAX and the project's PyTorch round alternating) with the
#                 measured matmul peaks, into docs/performance.md and $OUT/bench_gpu.json;
#         teacher ResNet-34 on Fashion-MNIST-32x3 trained on the GPU by tools/train_teacher.py;
#         distil  DFAD ResNet-34 -> ResNet-18 on Fashion-MNIST-32x3 (configs/fashion_mnist32x3/dfad.py),
#                 resumable: rerun the same command in the next call to continue.
set -euo pipefail
OUT=${1:-runs/gpu/out}
STAGE=${STAGE:-all}
WORK=${WORK:-runs/gpu}
mkdir -p "$OUT" "$WORK"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1 DFKD_JAX_NO_DOWNLOAD=1 DFKD_JAX_CACHE="$WORK/cache" DFKD_JAX_DATA_DIR="$WORK/tfds"
[ -d .gpu_data ] && export DFKD_JAX_SOURCE_DIR="$PWD/.gpu_data"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"

if [ "$STAGE" = all ] || [ "$STAGE" = bench ]; then
  XLA_PYTHON_CLIENT_PREALLOCATE=false $PY tools/benchmark.py --suite gpu --torch-autocast bfloat16 \
      --markdown docs/performance.md --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench.log"
  cp docs/performance.md "$OUT/performance.md"
fi
TEACHER="$WORK/teachers/fashion_mnist32x3_resnet34"
if [ "$STAGE" = all ] || [ "$STAGE" = teacher ]; then
  [ -f "$TEACHER/teacher.json" ] || $PY tools/train_teacher.py --dataset fashion_mnist32x3 --arch resnet34 \
      --epochs 10 --batch_size 256 --lr 2e-3 --out "$TEACHER" 2>&1 | tee "$OUT/teacher.log"
  cp "$TEACHER/teacher.json" "$OUT/"
fi
if [ "$STAGE" = all ] || [ "$STAGE" = distil ]; then
  $PY -m dfkd_jax.main --config configs/fashion_mnist32x3/dfad.py:resnet34,resnet18 --workdir "$WORK/dfad_r34_r18" \
      --config.teacher.checkpoint="$TEACHER" --config.train.progress=False 2>&1 | tee -a "$OUT/distil.log"
  cp "$WORK"/dfad_r34_r18/{metrics.jsonl,config.json} "$OUT/" ; cp "$WORK"/dfad_r34_r18/results.json "$OUT/" 2>/dev/null || true
fi

#!/usr/bin/env bash
# dlsuite's checks that need a GPU, run on a lent GPU machine through the device tool, one part a call
# (each must end inside the tool's 10 minutes). Wheels first, here: bash benchmarks/gpu_wheels.sh
#
#   device run, carry [".whl"]:  bash benchmarks/gpu_check.sh tests    # GPU tests: sync-free step, fast paths, OOM trial, pinned workers
#                                bash benchmarks/gpu_check.sh bench    # 3 recipes, plain; CUDA graphs; bf16
#                                bash benchmarks/gpu_check.sh study    # quick study: trials/hour, 1 and 4 workers on GPU 0
#                                bash benchmarks/gpu_check.sh population  # issue 13: P up to 1024, a population study, 32 seeds
#
# Figures and logs go to $OUT (the device tool brings them back).
set -uo pipefail
part=${1:?usage: gpu_check.sh tests|bench|study|population}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/dlsuite-gpu}
mkdir -p "$OUT"
python3 -c "import torch, lightning, mlflow, optuna; print('torch', torch.__version__, 'lightning', lightning.__version__,
'mlflow', mlflow.__version__, 'optuna', optuna.__version__, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
run() { local name=$1; shift; echo "== $name: $*"; "$@" 2>&1 | tee "$OUT/$name.txt"; }
case $part in
tests)
  run gpu_tests python3 -m pytest -q -m gpu -n 0 -p no:cacheprovider -rs tests/test_speed.py tests/test_studies.py ;;
bench)
  run bench_plain python3 -m benchmarks.bench --device cuda --repeats 3 --json "$OUT/bench_plain.json"
  run bench_graphs python3 -m benchmarks.bench --device cuda --recipes mnist1d_cnn,lstm_mnist1d --compile \
    --compile-mode reduce-overhead --repeats 3 --json "$OUT/bench_graphs.json"
  run bench_bf16 python3 -m benchmarks.bench --device cuda --recipes resnet32 --precision bf16-mixed --repeats 3 \
    --json "$OUT/bench_bf16.json" ;;
study)
  run study_1 python3 -m benchmarks.bench --device cuda --recipes mnist1d_cnn --modes dlsuite --repeats 1 --tiny \
    --study studies/quick.yaml --study-set trainer.accelerator=gpu
  run study_4 python3 -m benchmarks.bench --device cuda --recipes mnist1d_cnn --modes dlsuite --repeats 1 --tiny \
    --study studies/quick.yaml --study-set trainer.accelerator=gpu --study-workers 4 ;;
population)
  # model-steps/s of one population step at P up to 1024 against the hand-written loop of one model
  run pop_steps python3 -m benchmarks.population --device cuda --sizes 1,16,64,256,1024 --repeats 3
  # trials/hour of the quick study, sequential vs populations of 12, on the GPU (target: >= 30x)
  run pop_study python3 -m benchmarks.population_study --population 12 --set trainer.accelerator=gpu
  # runs/hour of 32 seeds of the MNIST-1D CNN, one run each vs one population
  run pop_seeds python3 -m benchmarks.population --seeds32 --epochs 20 --repeats 1 --device cuda ;;
*)
  echo "unknown part $part: tests, bench, study or population" >&2; exit 2 ;;
esac

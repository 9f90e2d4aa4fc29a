#!/usr/bin/env bash
# GPU checks and benchmarks in about 10 minutes, for a lent GPU machine (or any CUDA box).
#
#   benchmarks/gpu.sh wheels   # here, with internet: fetch the few wheels the GPU image lacks into .whl/
#   benchmarks/gpu.sh          # there: results (markdown, JSON, logs) under $OUT (default ./gpu-results)
#   DEVICE=cpu QUICK=1 benchmarks/gpu.sh   # dry run of every Python part on a CPU, tiny settings
#   (PY=/path/to/python picks the interpreter; else .venv, else python3 with carried wheels)
#
# The lent machine has no internet and its own python3 with torch (no pydantic, torch-fidelity,
# mlxtend, and not the pipeline's Prefect/Ray/MLflow/moto, which are too large to carry there):
# we use the project's .venv when there is one, else python3 with the carried wheels installed
# into /tmp/site. Steps, each under its own time limit so that the whole stays near 10 minutes:
#   1. environment: nvidia-smi, torch, the loop's CUDA paths (bf16, channels-last, fused Adam,
#      resident data, R1, DiffAugment) for a few steps of each architecture;
#   2. training-step throughput, 64x64x3, batch 256, dcgan and resnet_sngan, ours vs the plain
#      PyTorch-examples loop (goal: >= 3x), then the same with torch.compile;
#   3. sample quality on MNIST for the same GPU budget (training on the GPU, FID/KID on the GPU);
#   4. FID feature extraction vs torch-fidelity on the GPU;
#   5. the pipeline with train.use_gpu=true (smoke config, 1 worker) where its stack is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-results}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
mkdir -p "$OUT"

WHEELS="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.7.0 typing-inspection==0.4.5 torch-fidelity==0.4.0 mlxtend==0.25.0"
if [ "${1:-}" = "wheels" ]; then
    mkdir -p .whl
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $WHEELS
fi

# --- Python with what gan_model and the benchmarks import ---------------------------------
if [ -n "${PY:-}" ]; then
    :  # the caller's interpreter
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, pydantic" 2>/dev/null; then
    PY=.venv/bin/python
else
    PY=python3
    if ! $PY -c "import pydantic, torch_fidelity, mlxtend" 2>/dev/null; then
        if ls .whl/*.whl >/dev/null 2>&1; then
            $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
                && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
        else
            echo "missing pydantic/torch-fidelity/mlxtend and no .whl/: run 'benchmarks/gpu.sh wheels' where pip works" >&2
        fi
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
echo "python: $PY" | tee "$OUT/env.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, never stop the script
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.md"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "   -> rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.md"
    tail -n 12 "$OUT/$name.log" | tee -a "$OUT/summary.md"
}

if [ "$QUICK" = 1 ]; then
    RES=32 WIDTH=8 BATCH=16 STEPS=6 WARM=2 REP=1 BUDGET=10 SAMPLES=64 FIDN=32
else
    RES=64 WIDTH=64 BATCH=256 STEPS=60 WARM=10 REP=3 BUDGET=60 SAMPLES=2048 FIDN=1024
fi

# 1. Environment, and every CUDA path of the loop for a few steps.
{ nvidia-smi 2>&1 | head -15; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"; } >> "$OUT/env.txt" 2>&1
step loop_paths 120 $PY - "$DEVICE" <<'EOF'
import sys, numpy as np, torch
from gan_model.config import build_config
from gan_model.training import Hooks, RankData, train
device = sys.argv[1]
for arch in ("dcgan", "resnet_sngan"):
    cfg = build_config({}, [f"model.architecture={arch}", "data.resolution=32", "data.channels=3", "model.g_width=16",
                            "model.d_width=16", "train.batch_size=32", "train.steps=8", "train.r1_gamma=1",
                            "train.r1_every=4", "train.augment=on"])
    x = np.random.default_rng(0).integers(0, 256, (256, 3, 32, 32), dtype=np.uint8)
    reports = []
    train(cfg.model, cfg.train.recipe(), RankData(x, seed=0, batch_size=32), log_every=4, checkpoint_every=8,
          device=device, hooks=Hooks(report=lambda m, c: reports.append(m)))
    assert all(np.isfinite(v) for m in reports for v in m.values()), reports
    print(arch, device, "ok:", reports[-1])
EOF

# 2. Training-step throughput against the plain loop, eager and compiled.
step train_step 240 $PY -m benchmarks.bench_train_step --device "$DEVICE" --resolution $RES --width $WIDTH \
    --batch $BATCH --channels 3 --steps $STEPS --warmup $WARM --repeats $REP --json "$OUT/train_step.json"
[ "$QUICK" = 1 ] || step train_step_compiled 180 $PY -m benchmarks.bench_train_step --device "$DEVICE" --resolution $RES --width $WIDTH \
    --batch $BATCH --channels 3 --steps $STEPS --warmup $WARM --repeats 1 --compile \
    --json "$OUT/train_step_compiled.json"

# 3. Sample quality for the same budget, trained and evaluated on the device.
step quality 330 $PY -m benchmarks.bench_quality --device "$DEVICE" --budget-s $BUDGET --samples $SAMPLES

# 4. FID feature extraction: ours vs torch-fidelity, same weights, on the device.
step fid 120 $PY -c "from benchmarks.bench_fid import run, to_markdown; print('\n'.join(to_markdown(run(n=$FIDN, batch=128))))"

# 5. The pipeline on the GPU, where Prefect, Ray, MLflow and moto are installed.
if [ "$DEVICE" = cuda ] && $PY -c "import prefect, ray, mlflow, boto3, moto" 2>/dev/null; then
    step pipeline 300 $PY -c "import sys; from flows.cli import main; sys.exit(main(sys.argv[1:]))" run --config configs/smoke.yaml --json --set train.use_gpu=true \
        --set train.num_workers=1 --set model.architecture=resnet_sngan
else
    echo "== pipeline: skipped (needs DEVICE=cuda and Prefect/Ray/MLflow/moto; steps 1-3 ran the same loop on $DEVICE)" \
        | tee -a "$OUT/summary.md"
fi
echo "results in $OUT"

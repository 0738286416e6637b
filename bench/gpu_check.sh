#!/usr/bin/env bash
# The GPU check of issue 25 as one call of the device tool (a lent H100/H200; /work/.library/device/README.md):
# DINOv2-base's config at batch 256 in bfloat16, PyTorch eager and onnxruntime's CUDA execution provider, the
# original against `0→4:linear` (the TOAST paper's 1.39× on an H100) and 8 random plans, each runtime's latency
# table against its plans' end-to-end times (bench/bench_latency.py).
#
#   here, once:   bash scripts/device_wheels.sh                       # .whl/: what the device image lacks
#   device tool:  run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=590)
#
# With onnxruntime-gpu (the image's onnxruntime is the CPU build; the GPU wheel, 243 MiB, is more than a call
# carries): `ORT_GPU=1 bash scripts/device_wheels.sh` cuts it into .ort/*.part00 … part05, then one call per part,
# back to back while the machine stays warm (30 s), each run(command="bash bench/gpu_check.sh stage",
# carry=[".ort/<one part>"]), the last part carried with the check itself: run(command="bash bench/gpu_check.sh",
# carry=[".whl", ".ort/<last part>"]). The check joins the parts and installs onnxruntime-gpu over the image's.
#
# The log comes back as $OUT/gpu_check.log; the bench prints each case's figures as it ends, so a run stopped at its
# limit still says what it timed. onnxruntime runs only where its CUDA execution provider is there (onnxruntime-gpu;
# the image's onnxruntime may be the CPU build, and onnxruntime-gpu's wheel is larger than what a call carries): the
# log then says so and eager's figures stand alone. Where the provider has no kernels for a bfloat16 graph, the bench
# says so in one line and onnxruntime is timed in float16 instead.
#
# A dry run on a CPU (the plumbing, not the figures): GPU_CHECK_DEVICE=cpu GPU_CHECK_DTYPE=float32
# GPU_CHECK_BATCHES=1 GPU_CHECK_MODELS=demo-vit GPU_CHECK_PLANS="0→2:linear" GPU_CHECK_WHEELS=/tmp/whl311 OUT=/tmp/out
# bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
DTYPE=${GPU_CHECK_DTYPE:-bfloat16}
BATCHES=${GPU_CHECK_BATCHES:-256}
MODELS=${GPU_CHECK_MODELS:-dinov2-base}
PLANS=${GPU_CHECK_PLANS:-0→4:linear}
RANDOM_PLANS=${GPU_CHECK_RANDOM_PLANS:-8}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SECONDS_EAGER=${GPU_CHECK_SECONDS_EAGER:-240}   # each runtime's bench under its own limit, eager first
SECONDS_ORT=${GPU_CHECK_SECONDS_ORT:-270}
SITE=/tmp/toast-site
PARTS=/tmp/ort-parts
if [ "${1:-}" = stage ]; then  # a call that only leaves its carried parts of onnxruntime-gpu's wheel on this machine
    mkdir -p "$PARTS" && cp .ort/*.part* "$PARTS"/ && ls -la "$PARTS"
    exit
fi
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1

echo "== setup $(date -u +%H:%M:%S)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || { echo "could not install the carried wheels from $WHEELS (bash scripts/device_wheels.sh here first)"; exit 2; }
# toast itself, from this checkout (its packages map to top-level folders: a wheel, not a PYTHONPATH entry)
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE" . \
    || { echo "could not install toast-search from the checkout"; exit 2; }
if ls .ort/*.part* >/dev/null 2>&1; then mkdir -p "$PARTS" && cp .ort/*.part* "$PARTS"/; fi
if ls "$PARTS"/*.part00 >/dev/null 2>&1; then  # onnxruntime-gpu, joined from the parts the calls left here
    first=$(ls "$PARTS"/*.part00)
    wheel=/tmp/$(basename "$first" .part00)
    cat "${first%.part00}".part* > "$wheel"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$wheel" \
        || echo "onnxruntime-gpu did not install from $(ls "$PARTS" | wc -l) parts: onnxruntime stays the image's"
fi
export PYTHONPATH="$SITE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'PY' || exit 2
import onnxruntime, torch, transformers
import toast  # noqa: F401  (the wheels and the checkout installed)
print(f"python torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, onnxruntime {onnxruntime.__version__} "
      f"providers {onnxruntime.get_available_providers()}")
PY
ORT_CUDA=$(python3 -c "import onnxruntime as o; print(int('CUDAExecutionProvider' in o.get_available_providers()))")

bench() {  # one runtime's cases in dtype $3 under a limit of $1 seconds
    local limit=$1 runtime=$2 dtype=$3
    echo "== $runtime $dtype $(date -u +%H:%M:%S)"
    timeout --signal=INT "$limit" python3 bench/bench_latency.py --device "$DEVICE" --dtype "$dtype" \
        --batches "$BATCHES" --models "$MODELS" --runtimes "$runtime" --plans "$PLANS" \
        --random-plans "$RANDOM_PLANS" --big-random-plans "$RANDOM_PLANS" --threads 8 2>&1
    local rc=$?
    [ $rc -eq 124 ] && echo "$runtime: stopped at its limit of $limit s (the cases printed above are complete)"
    return 0
}

bench "$SECONDS_EAGER" eager "$DTYPE"
if [ "$DEVICE" = cpu ] || [ "$ORT_CUDA" = 1 ]; then
    start=$(date +%s)
    bench "$SECONDS_ORT" onnxruntime "$DTYPE" | tee "$OUT/ort.log"
    left=$((SECONDS_ORT - $(date +%s) + start))
    # a provider without kernels for the dtype (bfloat16 Conv on CUDA's, say) is refused in one line: float16 then
    if grep -q "cannot run this model in $DTYPE\|cannot run a model in $DTYPE" "$OUT/ort.log" && [ "$left" -gt 60 ]; then
        bench "$left" onnxruntime float16
    fi
else
    echo "== onnxruntime skipped: no CUDAExecutionProvider in this onnxruntime (onnxruntime-gpu is not installed)"
fi
echo "== done $(date -u +%H:%M:%S)"

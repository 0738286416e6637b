#!/usr/bin/env bash
# The wheels a lent GPU machine (the `device` tool) lacks for bench/gpu_check.sh, downloaded here into .whl/ (ignored
# by git; the device tool's `carry` takes it there). Its image has torch, onnxruntime, pandas, pyarrow, scikit-learn,
# accelerate and safetensors (/work/.library/device/KINDS.md); toast also imports optuna, datasets and fvcore. Its
# Transformers (5.17) is older than the one the project requires and tests (pyproject.toml): the tested one comes
# along, with the huggingface_hub it needs and what those import. fvcore and iopath are published as source archives
# only: their wheels are built here (pure Python).
#
#   bash scripts/device_wheels.sh          # Python 3.12, the device image's
#   PYVER=3.11 bash scripts/device_wheels.sh   # another Python (a local dry run of the check)
#   ORT_GPU=1 bash scripts/device_wheels.sh    # also onnxruntime-gpu, in parts for several calls (bench/gpu_check.sh)
#
# onnxruntime-gpu (built for CUDA 13, as the image) is a 243 MiB wheel, more than one call carries (64 MiB with the
# checkout): ORT_GPU=1 saves it in .ort/ cut into 45 MiB parts, each carried by its own call to a warm machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
DEST=${DEST:-.whl}
mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# each with no dependencies: the image holds the rest (numpy, pyyaml, tqdm, pandas, pyarrow, xxhash, fsspec …);
# optuna imports sqlalchemy and alembic only for a database storage, which the bench does not use
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${platforms[@]}" -d "$DEST" \
    "optuna==5.1.0" "colorlog==6.12.0" \
    "datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19" \
    "yacs==0.1.8" "termcolor==3.3.0" \
    "transformers==5.25.0" "huggingface_hub==2.4.0" "kernels==0.19.1" "httpx2==2.17.0" "httpcore2==2.17.0" \
    "truststore==0.10.5" "hf-xet==1.8.0" "regex==2026.12.2" "tokenizers==0.23.3"
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "fvcore==0.1.5.post20221221" "iopath==0.1.10"
du -ch "$DEST"/*.whl | tail -1
if [ "${ORT_GPU:-0}" = 1 ]; then
    mkdir -p .ort
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        "${platforms[@]}" -d .ort "onnxruntime-gpu==1.31.1"
    for whl in .ort/*.whl; do
        split -b 45M -d "$whl" "$whl.part" && rm "$whl"
    done
    ls -la .ort
fi

#!/usr/bin/env bash
# Paper Table 7 on one GPU: peak training memory and step time per method (sft, dft, rft, dpo, rift, naive, kto)
# at Qwen2.5-Math-1.5B's shapes (random weights), bf16 autocast: with fp32 master weights; then, as time allows, the
# same with gradient checkpointing (rift_core/configs/paper.yaml's setting) and with bf16 weights. Writes one results file,
# $OUT/gpu_table7.md when $OUT is set, else benchmarks/out/gpu_table7.md (and the whole log beside it,
# gpu_check.log). What is measured and how: benchmarks/gpu_table7.py; how to run it: docs/GPU_CHECK.md.
#
# Needs one CUDA GPU and a Python 3 with torch, transformers, accelerate, pyarrow and pandas; TRL and datasets come
# either from that Python (pip install trl==1.16.0 datasets==5.2.0) or, on a machine without network, from
# pure-Python wheels fetched beforehand on a machine that has one and copied over with the repository:
#     make gpu-wheels                  # = bash benchmarks/gpu_check.sh --download-wheels (1.8 MB into gpu_wheels/)
# Then, from the repository root on the GPU machine:
#     bash benchmarks/gpu_check.sh
# Nothing is downloaded (the Hugging Face libraries run offline; the model is built from its shapes). Before any
# method starts it lists the packages it found and stops naming any that is missing. Estimated 4-7 minutes, not
# yet measured on a GPU. The measurement ends by GPU_CHECK_DEADLINE_S (default 390) seconds: methods not started
# by then are marked skipped, one still running is stopped, and the results file, rewritten after every method,
# holds what finished either way (the fp32 table first, the others after it).
#
# The wheels install with pip --no-index --no-deps --target into a scratch folder put first on PYTHONPATH, so the
# machine's own packages stay untouched. Not a venv: when python3 is itself a venv (where torch was installed
# into it), `venv --system-site-packages` would see the base interpreter's packages, without torch. The
# wheels: trl and datasets (pinned as in pyproject.toml) and datasets' dill and multiprocess (WHEEL_PINS below).
# vLLM, Dagster, polars and math-verify are not needed: the check trains, it neither samples nor grades.
#
# CPU dry run (what `make test` runs, tests/test_gpu_check.py; about a minute):
#     PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --tiny      # -> benchmarks/out/gpu_table7_tiny.md
# Usage: gpu_check.sh [--tiny] [gpu_table7.py options, e.g. --methods sft,rift --variants fp32]
#        gpu_check.sh --download-wheels
# Environment: PYTHON (default python3), GPU_WHEELS (default gpu_wheels), GPU_CHECK_DEADLINE_S (default 390), OUT.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-gpu_wheels}
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-390}
WHEEL_PINS=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)
WHEELS_MAX_BYTES=$((16 * 1024 * 1024))  # pure-Python wheels only: a larger folder means torch or CUDA crept in

download_wheels() {
    rm -rf "$WHEELS"
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
        -d "$WHEELS" "${WHEEL_PINS[@]}"
    local w bytes
    for w in "$WHEELS"/*.whl; do
        [[ $w == *-none-any.whl ]] || { echo "not a pure-Python wheel: $w" >&2; exit 1; }
    done
    bytes=$(cat "$WHEELS"/*.whl | wc -c)
    ls -l "$WHEELS"
    echo "$WHEELS: $(ls "$WHEELS"/*.whl | wc -l) wheels, $bytes bytes"
    ((bytes < WHEELS_MAX_BYTES)) || { echo "$WHEELS is over $WHEELS_MAX_BYTES bytes" >&2; exit 1; }
}

main() {
    local mode=gpu
    if [[ ${1:-} == --tiny ]]; then mode=tiny; shift; fi
    local out_dir=${OUT:-$REPO/benchmarks/out} suffix=""
    [[ $mode == tiny ]] && suffix=_tiny
    local results=$out_dir/gpu_table7$suffix.md
    echo "gpu_check ($mode) in $REPO; python: $PYTHON; results: $results"

    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
    export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
    export HF_HOME=$SCRATCH/hf  # nothing is downloaded; keeps the machine's caches untouched
    [[ $mode == tiny ]] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

    # 1. trl and what it needs, offline, from the wheel folder. The wheels are fetched for Python 3.12 (pure Python);
    #    pip is told so, so the CPU dry run installs and uses the very same files on another Python.
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
            --python-version 3.12 --only-binary=:all: --target "$SCRATCH/site" "$WHEELS"/*.whl
        export PYTHONPATH=$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}
        echo "installed offline from $WHEELS, first on PYTHONPATH: $(cd "$WHEELS" && echo *.whl)"
    else
        echo "no wheels in $WHEELS: $PYTHON's own packages are used (offline: run make gpu-wheels where there is network, copy gpu_wheels/ along)"
    fi

    # 2. preflight: what will run, or why not (seconds, before any method starts)
    "$PYTHON" - "$mode" <<'EOF'
import importlib, importlib.metadata as md, sys
mode = sys.argv[1]
missing = []
for name in ("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "pyarrow", "fsspec", "pandas",
             "huggingface_hub"):
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '?')}  ({module.__file__})")
    except Exception as e:  # noqa: BLE001 - report every missing piece at once
        missing.append(f"{name} ({type(e).__name__}: {e})")
for dist in ("trl", "datasets"):  # what the wheels ask of the machine's packages
    from packaging.requirements import Requirement
    for spec in md.requires(dist) or []:
        req = Requirement(spec)
        if req.marker or req.name.lower() in ("torch",):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            print(f"  warning: {dist} requires {req}, not installed")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            print(f"  warning: {dist} requires {req}, found {have}")
if missing:
    sys.exit("missing: " + "; ".join(missing) + "\n(pip install them, or run `make gpu-wheels` where there is network and copy gpu_wheels/ along)")
import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"  device: {p.name}, {p.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}")
elif mode == "gpu":
    sys.exit("no CUDA device: on a CPU run `gpu_check.sh --tiny`")
else:
    print("  device: CPU (dry run)")
EOF

    # 3. the measurement; the results file is rewritten after every method
    local args=(--out "$results")
    if [[ $mode == tiny ]]; then
        args+=(--tiny --variants fp32)
    else
        args+=(--variants fp32,fp32+gc,bf16 --deadline-s "$DEADLINE_S")
    fi
    "$PYTHON" benchmarks/gpu_table7.py "${args[@]}" "$@"
    echo "results: $results"
}

case "${1:-}" in
    --download-wheels) download_wheels; exit ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit ;;
esac
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
out_dir=${OUT:-$REPO/benchmarks/out}
mkdir -p "$out_dir"
[[ ${1:-} == --tiny ]] && log=$out_dir/gpu_check_tiny.log || log=$out_dir/gpu_check.log
set -o pipefail
main "$@" 2>&1 | tee "$log"

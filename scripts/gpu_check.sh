#!/usr/bin/env bash
# One go on a GPU machine: `make doctor`, then `make bench-gpt2` on CUDA (GPT-2 124M, block
# 1024, bf16, torch.compile on and off), every figure written to one directory.
#
#   scripts/gpu_check.sh [DIR]        DIR defaults to $OUT, else gpu-check-<UTC time>/
#
# Writes DIR/environment.txt (nvidia-smi, torch), doctor.txt/.json, bench-gpt2.txt/.json and
# summary.txt (GPU, tokens/s and MFU for AdamW, pruning overhead, mask-update / fused step,
# peak memory per method). Each step is cut off by `timeout` (DOCTOR_TIMEOUT, default 240 s;
# BENCH_TIMEOUT, default 270 s) so the whole check stays within about 8 minutes; what a cut-off
# step printed so far stays in its .txt. Exit status: 0 when both steps succeeded, else 1.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${OUT:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}}
mkdir -p "$dir" || { echo "gpu_check: cannot create $dir; pass a writable directory" >&2; exit 2; }
dir=$(cd "$dir" && pwd)

# `make` when the project's .venv is set up and current; otherwise (a bare GPU machine
# without network, where make would try to build .venv) the same entry points with the
# Python that has torch ($PYTHON, else .venv's, else python3).
if [ -x .venv/bin/python ] && make -q .venv/.installed 2>/dev/null; then
    py=.venv/bin/python
    doctor=(make -s doctor ARGS="--json $dir/doctor.json")
    bench=(make -s bench-gpt2 ARGS="--device cuda --json $dir/bench-gpt2.json")
else
    py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
    doctor=("$py" -m scripts.doctor --json "$dir/doctor.json")
    bench=("$py" -m scripts.bench_gpt2 --device cuda --json "$dir/bench-gpt2.json")
fi

{
    echo "gpu_check started $(date -u +%FT%TZ) in $(pwd)"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available",
               torch.cuda.is_available(), "devices", torch.cuda.device_count())' 2>&1
} > "$dir/environment.txt"

step() {  # step NAME TIMEOUT COMMAND...: run it, tee its output, record rc and seconds
    local name=$1 limit=$2
    shift 2
    local began=$SECONDS
    echo "== $name: $* (timeout ${limit} s)"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$dir/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "$name rc=$rc seconds=$((SECONDS - began))" >> "$dir/steps.txt"
    [ "$rc" -eq 124 ] && echo "gpu_check: $name was cut off after ${limit} s" | tee -a "$dir/$name.txt" >&2
    return "$rc"
}

: > "$dir/steps.txt"
step doctor "${DOCTOR_TIMEOUT:-240}" "${doctor[@]}"; doctor_rc=$?
step bench-gpt2 "${BENCH_TIMEOUT:-270}" "${bench[@]}"; bench_rc=$?
"$py" -m scripts.gpu_check_summary "$dir" | tee "$dir/summary.txt"
echo "figures in $dir"
[ "$doctor_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]

#!/usr/bin/env bash
# One GPU check of moa, no network, no pip: the machine's own PyTorch and Triton.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        # default: $OUT, else benchmarks/results/gpu-check-<time>
#
# Writes into OUT_DIR: gpu_check.log (everything printed), env.json, pytest_gpu.xml,
# ffn_overhead.json, train.json, fsdp_smoke/ (a run directory) and gpu_check.json (what
# each stage returned and how long it took). Budget: <= 8 minutes on one H200; each stage
# has its own time limit, and the benchmarks stop adding rows when their budget is spent.
#   1. pytest -m gpu tests (tests/gpu and every other gpu test)  (<= 130 s)
#   2. FFN overhead, bf16, d = 2048 and 768, 16k tokens         (<= 150 s)
#   3. compiled bf16 training of gpu-125m: swiglu, moa-glu, MoE  (<= 105 s)
#   4. moa train --nproc 1 train.parallel=fsdp on CUDA (smoke)   (<= 70 s)
# The limits add up to 475 s with the environment record (20 s).
# GPU_CHECK_SMOKE=1 runs every stage at toy size on CPU (a check of the script itself).
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results/gpu-check-$(date +%Y%m%d-%H%M%S)}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOG="$OUT_DIR/gpu_check.log"
export PYTHONPATH=src
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
unset TRITON_INTERPRET MOA_GPU_TESTS_ON_CPU
SMOKE="${GPU_CHECK_SMOKE:-0}"
PYTEST_SEL=(tests)  # every gpu-marked test of the repository: tests/gpu and the rest
BENCH=()
FSDP=(train.device=cuda train.tokens=204800 train.eval_tokens=16384)
if [ "$SMOKE" = 1 ]; then
  export MOA_GPU_TESTS_ON_CPU=1
  PYTEST_SEL=(tests/gpu/test_gpu_triton.py -k float64)
  BENCH=(--smoke)
  FSDP=(train.device=cpu train.tokens=10240 train.eval_tokens=2048)
fi
exec > >(tee -a "$LOG") 2>&1
T0=$(date +%s)
STAGES=()

stage() {  # stage NAME LIMIT_S CMD...: run with a time limit, record rc and seconds
  local name=$1 limit=$2
  shift 2
  [ "$SMOKE" = 1 ] && limit=$(( limit * 10 ))  # the CPU is slow at this, and it is only a script check
  local t=$(date +%s)
  echo "=== [$name] $* (limit ${limit}s, at $(( t - T0 ))s)"
  timeout --signal=INT --kill-after=10 "$limit" "$@"
  local rc=$?
  local dt=$(( $(date +%s) - t ))
  echo "=== [$name] rc=$rc in ${dt}s"
  STAGES+=("{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $dt, \"timed_out\": $([ $rc -eq 124 ] || [ $rc -eq 130 ] && echo true || echo false)}")
}

stage env 20 python3 - "$OUT_DIR/env.json" <<'EOF'
import json, platform, subprocess, sys
import torch
info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "platform": platform.platform()}
try:
    import triton
    info["triton"] = triton.__version__
except ImportError as e:
    info["triton"] = f"not importable: {e}"
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                sms=p.multi_processor_count)
try:
    info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    info["git_commit"] = None
print(json.dumps(info, indent=1))
json.dump(info, open(sys.argv[1], "w"), indent=1)
EOF

stage pytest_gpu 130 python3 -m pytest -q -m gpu "${PYTEST_SEL[@]}" -p no:cacheprovider --durations=15 \
  --junitxml="$OUT_DIR/pytest_gpu.xml"

stage ffn_overhead 150 python3 benchmarks/gpu_ffn_overhead.py --d-models 2048,768 --tokens 16384 --reps 20 \
  --budget-s 120 --json "$OUT_DIR/ffn_overhead.json" ${BENCH[@]+"${BENCH[@]}"}

stage train_gpu_125m 105 python3 benchmarks/gpu_train_bench.py --batch 16 --seq 1024 --steps 20 --warmup 4 \
  --budget-s 70 --json "$OUT_DIR/train.json" ${BENCH[@]+"${BENCH[@]}"}

rm -rf "$OUT_DIR/fsdp_smoke"
stage fsdp_smoke 70 python3 -m moa train --nproc 1 --preset debug --no-progress --out "$OUT_DIR/fsdp_smoke" \
  train.parallel=fsdp ${FSDP[@]+"${FSDP[@]}"}

TOTAL=$(( $(date +%s) - T0 ))
python3 - "$OUT_DIR" "$TOTAL" "${STAGES[@]}" <<'EOF'
import json, os, sys
out, total, stages = sys.argv[1], int(sys.argv[2]), [json.loads(s) for s in sys.argv[3:]]
result = {"total_seconds": total, "stages": stages}
for key, name in (("env", "env.json"), ("ffn_overhead", "ffn_overhead.json"), ("train", "train.json"),
                  ("fsdp_smoke", "fsdp_smoke/summary.json")):
    path = os.path.join(out, name)
    result[key] = json.load(open(path)) if os.path.exists(path) else None
json.dump(result, open(os.path.join(out, "gpu_check.json"), "w"), indent=1)
print(f"=== total {total}s; stages: " + ", ".join(f"{s['stage']} rc={s['rc']} {s['seconds']}s" for s in stages))
for t in (result["ffn_overhead"] or {}).get("targets", []):
    print(f"=== target d={t['d_model']}: {t['status']}" + (f" (time {t['time_ratio']:.3f} ≤ {t['time_target']}, "
          f"memory {t['mem_ratio']:.3f} ≤ {t['mem_target']})" if "time_ratio" in t else ""))
EOF

#!/usr/bin/env bash
# The GPU path in one go, on one CUDA GPU, in under 8 minutes (each section has its own time limit):
#   1. the CUDA tests (pytest -m cuda: flex == blocked == dense, SDPA kernels, bf16 training steps of every attention
#      plain / reversible / compiled, train.py bf16-mixed and NCCL DDP, the benchmark's own smoke test);
#   2. benchmarks/model.py in bf16 at N = 4K, 16K, 64K: local_global vs HF Longformer and bare flex_attention,
#      lsh vs HF Reformer (full vs nn.TransformerEncoder at 4K);
#   3. if time is left: the model.compile=true speed-up at 16K.
# Prints the ratio rows at the end; every table is also under $OUT (default benchmarks/results/model_cuda_bf16).
#
#   bash benchmarks/gpu_check.sh                 # from the repository root (or anywhere: it cds there)
#   PYTHON=python OUT=/tmp/gpu bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/model_cuda_bf16}
BUDGET_S=${BUDGET_S:-470}
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { local l=$(( BUDGET_S - $(elapsed) )); [ "$l" -lt 30 ] && l=30; echo "$l"; }

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch.cuda.is_available() is False -- install the CUDA build of torch on a GPU machine" >&2
    exit 2
fi
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, {torch.cuda.device_count()} GPU(s)')"

echo "== 1/3 CUDA tests ($(elapsed) s)"
timeout 240 "$PY" -m pytest -q -m cuda tests -p no:cacheprovider
tests_rc=$?

echo "== 2/3 whole-model training step, bf16 ($(elapsed) s)"
# --max-wall-s: no configuration is started after that many seconds (the rest are 'skipped'), so the tables are
# always written; about 2 minutes stay for section 3
timeout $(( $(left) + 60 )) "$PY" benchmarks/model.py --device cuda --dtype bf16 --lengths 4096 16384 65536 \
    --impls longdoc-local_global hf-longformer flex-local_global longdoc-lsh hf-reformer longdoc-full torch-transformer \
    --full-max-n 4096 --repeats 3 --warmup 2 --timeout 100 --max-wall-s $(( $(left) - 130 )) --out "$OUT" > /dev/null
bench_rc=$?

if [ "$(left)" -gt 90 ]; then
    echo "== 3/3 model.compile=true, bf16, N = 16K ($(elapsed) s)"
    timeout $(( $(left) + 30 )) "$PY" benchmarks/model.py --device cuda --dtype bf16 --lengths 16384 \
        --impls longdoc-local_global longdoc-lsh --compile off on --repeats 3 --warmup 3 --timeout 150 \
        --max-wall-s $(( $(left) - 30 )) --out "${OUT}_compile" > /dev/null
else
    echo "== 3/3 model.compile skipped: $(left) s left of the ${BUDGET_S} s budget"
fi

echo
echo "== ratios (< 1: longdoc faster / smaller; targets: local_global <= 0.3x HF Longformer time, <= 1.5x bare flex)"
for md in "$OUT/model.md" "${OUT}_compile/model.md"; do
    [ -f "$md" ] && { echo "-- $md"; awk '/^\| ratio/{on=1} on&&/^$/{exit} on' "$md"; grep -E '^- ' "$md"; }
done
echo
echo "gpu_check: tests rc=$tests_rc, benchmark rc=$bench_rc, $(elapsed) s"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]

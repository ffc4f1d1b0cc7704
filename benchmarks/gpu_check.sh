#!/usr/bin/env bash
# Issue 13's GPU check, in one go. Everything goes under $OUT (default benchmarks/results/gpu):
#   env.txt              GPU, driver, torch
#   maco_*.{json,md}     bench_maco.py: lite0/1/2, B up to the memory limit, bf16 and fp32, step compiled or not,
#                        host and device ms per step, operator calls per step, % of the measured bf16 peak
#   vs_horama.{json,md,png}  bench_vs_horama.py: objectives/s ratio and quality figures, same settings
#   render_100.txt       a timed `lens render` of 100 classes x efficientnet-lite0 at default settings
#                        (class MACO, CRAFT, concept MACOs); its store under $OUT/render-store (runs.jsonl)
#   summary.md           all markdown tables, and each part's exit code and seconds
#
#   benchmarks/gpu_check.sh            # on a GPU machine (estimated 12-15 minutes on one H100/H200; PARTS to split)
#   benchmarks/gpu_check.sh --smoke    # on a CPU: tiny model and settings, checks that every part runs (minutes)
#
# PY (default: python) is the interpreter with lens installed ('.[bench]' for Horama). PARTS (default: all)
# selects parts: "maco compile horama render". Each part has a time limit and the script goes on when one fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-benchmarks/results/gpu}
PARTS=${PARTS:-"maco compile horama render"}
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.md"
echo "# gpu_check $(date -u +%FT%TZ) smoke=$SMOKE" > "$SUMMARY"

part() {  # part NAME LIMIT_S COMMAND...: run, log, record exit code and seconds
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name: $*" | tee -a "$OUT/log.txt"
  timeout "$limit" "$@" >> "$OUT/log.txt" 2>&1
  local rc=$?
  echo "- $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$SUMMARY"
}

{ nvidia-smi 2>/dev/null || echo "no nvidia-smi"; $PY -c "import torch, torchvision, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"; } > "$OUT/env.txt" 2>&1

if [ $SMOKE = 1 ]; then
  COMMON=(--device cpu --tiny --timed-steps 2)
  LITE0=tiny; OTHERS=""; B_LITE0=2,4; B_OTHERS=2; B_COMPILE=2; COMPILE_VARIANTS=step-compile  # graph modes need CUDA
  COMPILE_LIMIT=1200  # inductor compiles for minutes on a small shared CPU
  HORAMA_ARGS=(--device cpu --steps 3 --image-size 64 --input-size 64 --crops 2 --classes 1,967)
else
  COMMON=(--device cuda --timed-steps 10)
  LITE0=efficientnet-lite0; OTHERS="efficientnet-lite1 efficientnet-lite2"
  B_LITE0=16,64,256,1024; B_OTHERS=64,256,1024; B_COMPILE=64,256
  COMPILE_VARIANTS=step-cuda-graph,fp32+step-cuda-graph,step-reduce-overhead; COMPILE_LIMIT=600
  HORAMA_ARGS=(--device cuda)
fi

# Rows stop at the first out-of-memory B, so the largest B listed that fits is the memory limit.
if [[ " $PARTS " == *" maco "* ]]; then
  part "maco lite0 eager" 600 $PY benchmarks/bench_maco.py "${COMMON[@]}" --ops --models "$LITE0" --batch-sizes "$B_LITE0" \
    --variants base,fp32 --out "$OUT" --tag maco_lite0_eager
  for m in $OTHERS; do
    part "maco $m eager" 300 $PY benchmarks/bench_maco.py "${COMMON[@]}" --models "$m" --batch-sizes "$B_OTHERS" \
      --variants base --out "$OUT" --tag "maco_${m}_eager"
  done
fi
if [[ " $PARTS " == *" compile "* ]]; then
  # The graph-capturable step: manual CUDA graph of the whole step (no compile time), torch.compile with CUDA graphs.
  part "maco lite0 compiled" "$COMPILE_LIMIT" $PY benchmarks/bench_maco.py "${COMMON[@]}" --ops --models "$LITE0" \
    --batch-sizes "$B_COMPILE" --variants "$COMPILE_VARIANTS" --out "$OUT" --tag maco_lite0_compiled
fi
if [[ " $PARTS " == *" horama "* ]]; then
  part "vs horama" 900 $PY benchmarks/bench_vs_horama.py "${HORAMA_ARGS[@]}" --out "$OUT" --tag vs_horama
fi
if [[ " $PARTS " == *" render "* ]]; then
  store="$OUT/render-store"
  rm -rf "$store"
  if [ $SMOKE = 1 ]; then
    cfg=$($PY -c "import tempfile, pathlib; from tests.conftest import write_tiny_zoo, write_class_folder; \
d = pathlib.Path(tempfile.mkdtemp()); print(write_tiny_zoo(d / 'zoo', images=write_class_folder(d / 'images')))")
    render_args=(--config "$cfg" --classes 1-3 --device cpu)
  else
    render_args=(--models efficientnet-lite0 --classes 0-99 --device cuda)
  fi
  t0=$SECONDS
  part "render 100 classes" 1800 $PY -m generator render "${render_args[@]}" --out "$store" --no-progress
  echo "render wall seconds: $((SECONDS - t0)); args: ${render_args[*]}" > "$OUT/render_100.txt"
  $PY - "$store" >> "$OUT/render_100.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
events = [json.loads(l) for l in (Path(sys.argv[1]) / "runs.jsonl").read_text().splitlines()]
batches = [e for e in events if e["event"] == "batch_end"]
for kind in sorted({e["kind"] for e in batches}):
    b = [e for e in batches if e["kind"] == kind]
    print(f"{kind}: {len(b)} batches, {sum(e['done'] for e in b)} done, {sum(e['failed'] for e in b)} failed, "
          f"{sum(e['seconds'] for e in b):.1f} s, batch sizes {sorted({e['batch_size'] for e in b})}")
print("run_end:", [e for e in events if e["event"] == "run_end"])
EOF
  cat "$OUT/render_100.txt" >> "$SUMMARY"
fi

for f in "$OUT"/maco_*.md "$OUT"/vs_horama.md; do
  [ -f "$f" ] && { echo; echo "## $(basename "$f" .md)"; cat "$f"; } >> "$SUMMARY"
done
echo "wrote $OUT (summary: $SUMMARY)"

#!/usr/bin/env bash
# One prepared GPU session (about 9 minutes on an H100/H200): every figure of the performance issue
# side by side in one run, on a random-weight model of Llama-3.1-8B's shape.
#
#   OUT=out bash bench/gpu_session.sh     # results: $OUT/*.json (a dozen files at most), logs: $OUT/logs.tar.gz
#
# 0. smoke: the GPU tests of the CUDA-only paths and a tiny `kvlab bench`; stops here if they fail
# 1. `kvlab bench` 32K and 130944 tokens (128K less room for the generated tokens: the window is
#    131072): plain transformers vs kvlab full / snapkv / streaming_llm at 10%,
#    chunked prefill (4096), CUDA-graph decoding, each case in its own process
# 1a. decode attention alone (bench/decode_kernels.py): is the decode step's excess attention or the rest?
# 1b. decode paths at 128K (bench/decode_modes.py): CUDA graph vs torch.compile + CUDA graph, each with
#     kvlab's decode attention (compiled: traced into the step) or flex_attention's decoding kernel
#     (KVLAB_DECODE_ATTENTION=flex); 1b'' compiled with decode attention as one opaque operator (=matmul)
# 1c. chunked-prefill attention per layer (bench/chunk_kernels.py): flash lower-right vs the cuDNN
#     split of kvlab.chunk_attention vs one pass; then `full` at 128K end to end with the split on
# 2. kvpress 0.5.5 (the field's reference tool) on the same shape: SnapKV keeping 10% at 32K and
#    128K, StreamingLLM at 128K -- needs KVPRESS_WHEELS (a folder of wheels: kvpress 0.5.5,
#    transformers 5.2.0, tokenizers 0.22.2, fire 0.6.0, cachetools, termcolor) and ANCHOR (the
#    peers' gpu_anchor.py); skipped without them
# 3. sparse prefill: the attention kernels alone at 32K/128K, then the compiled-flex GPU test
# 4. sparse prefill end to end at 128K (one pass: full vs a_shape vs minference), if time is left
# 5. the GPU tests of compiled decoding (step 0 runs the others), if time is left
set -u
OUT=${OUT:-out}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
trap 'tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null' EXIT
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT/src:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
START=$(date +%s)
log() { echo "== +$(( $(date +%s) - START ))s $*"; }
left() { echo $(( ${BUDGET:-560} - ($(date +%s) - START) )); }

log "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$LOGS/env.txt"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$LOGS/env.txt"

log "0. smoke"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/core/test_cuda_paths.py tests/core/test_decoding.py \
  tests/core/test_flex_decode.py -k "not compiled" > "$LOGS/pytest_gpu.log" 2>&1
echo "pytest exit $?"; tail -15 "$LOGS/pytest_gpu.log"
timeout 120 "$PY" -m kvlab.cli.main bench --random-weights tiny-llama --lengths 1k --methods full,snapkv,streaming_llm \
  --chunk-size 256 --decode-tokens 8 --warmup short --json "$OUT/smoke.json" > "$LOGS/smoke.log" 2>&1
smoke=$?
tail -12 "$LOGS/smoke.log"
if [ $smoke -ne 0 ]; then log "smoke failed ($smoke): stopping"; exit 3; fi
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || { log "no CUDA here: smoke only"; exit 0; }

log "1. kvlab bench, Llama-3.1-8B shape, 32K and 128K"
timeout $(( $(left) - 200 )) "$PY" -m kvlab.cli.main bench --random-weights llama-3.1-8b --lengths 32k,130944 \
  --methods full,snapkv,streaming_llm --budget 10% --chunk-size 4096 --decode-tokens 64 --warmup-steps 3 \
  --warmup short --timeout 170 --json "$OUT/bench_8b.json" 2>&1 | tee "$LOGS/bench_8b.log" | grep -v "^ *$" | tail -30

if [ "$(left)" -gt 240 ]; then
  log "1a. decode attention alone per layer (CUDA graph replay): kvlab split / one matmul / SDPA vs reading K+V"
  timeout 90 "$PY" bench/decode_kernels.py --lengths 13100,32k,130944 --json "$OUT/decode_kernels.json" \
    > "$LOGS/decode_kernels.log" 2>&1
  grep -E "^[0-9]+ " "$LOGS/decode_kernels.log"
fi

if [ "$(left)" -gt 200 ]; then
  log "1b. decode paths at 128K, 10% kept: CUDA graph (matmuls / flex) vs torch.compile + CUDA graph, same cache"
  timeout $(( $(left) - 150 < 240 ? $(left) - 150 : 240 )) "$PY" bench/decode_modes.py --model random:llama-3.1-8b \
    --length 130944 --methods snapkv --modes graph,graph+flex,compiled --tokens 32 --rounds 3 --warmup 3 \
    --json "$OUT/decode_modes_8b.json" 2>&1 | tee "$LOGS/decode_modes_8b.log" | grep -v "^ *$" | tail -5
fi
if [ "$(left)" -gt 330 ]; then
  log "1b'. the same with torch.compile + flex decode attention (a second compile of the step)"
  timeout $(( $(left) - 250 < 200 ? $(left) - 250 : 200 )) "$PY" bench/decode_modes.py --model random:llama-3.1-8b \
    --length 130944 --methods snapkv --modes graph,compiled+flex --tokens 32 --rounds 3 --warmup 3 \
    --json "$OUT/decode_modes_8b_flex.json" 2>&1 | tee "$LOGS/decode_modes_8b_flex.log" | grep -v "^ *$" | tail -3
fi
if [ "$(left)" -gt 330 ]; then
  log "1b''. the same with decode attention one opaque operator in the compiled step (before 2026-12-05: the default)"
  timeout $(( $(left) - 250 < 200 ? $(left) - 250 : 200 )) "$PY" bench/decode_modes.py --model random:llama-3.1-8b \
    --length 130944 --methods snapkv --modes graph,compiled+matmul --tokens 32 --rounds 3 --warmup 3 \
    --json "$OUT/decode_modes_8b_opaque.json" 2>&1 | tee "$LOGS/decode_modes_8b_opaque.log" | grep -v "^ *$" | tail -3
fi

if [ "$(left)" -gt 180 ]; then
  log "1c. chunked-prefill attention kernels; full at 128K with KVLAB_CUDA_CHUNK_ATTENTION=split"
  timeout 60 "$PY" bench/chunk_kernels.py --lengths 32k,128k --json "$OUT/chunk_kernels.json" \
    > "$LOGS/chunk_kernels.log" 2>&1
  grep -E "^[0-9]+ " "$LOGS/chunk_kernels.log"
  KVLAB_CUDA_CHUNK_ATTENTION=split timeout 100 "$PY" -m kvlab.cli.main bench --random-weights llama-3.1-8b \
    --lengths 130944 --methods full --no-baseline --chunk-size 4096 --decode-tokens 16 --warmup short \
    --json "$OUT/bench_8b_full_split.json" 2>&1 | tail -4
fi

if [ -n "${KVPRESS_WHEELS:-}" ] && [ -n "${ANCHOR:-}" ] && [ "$(left)" -gt 150 ]; then
  log "2. kvpress 0.5.5 on the same shape"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/kvp "$KVPRESS_WHEELS"/*.whl > /dev/null 2>&1
  mkdir -p /tmp/nokern/kernels && echo 'raise ImportError("not for transformers 5.2")' > /tmp/nokern/kernels/__init__.py
  for c in 1 4 5; do  # SnapKV 10% at 32K, SnapKV 10% at 128K, StreamingLLM 10% at 128K; one process each
    [ "$(left)" -gt 120 ] || break
    OUT="$OUT" PYTHONPATH=/tmp/nokern:/tmp/kvp timeout 110 "$PY" "$ANCHOR" kvp $c 2>&1 | grep -E "^REC|Error|error" | tail -3
  done
fi

if [ "$(left)" -gt 60 ]; then
  log "3. sparse prefill kernels"
  timeout $(( $(left) - 45 )) "$PY" bench/sparse_kernels.py --lengths 32k,128k --repeats 5 \
    --json "$OUT/sparse_kernels.json" > "$LOGS/sparse_kernels.log" 2>&1
  grep -E "^[0-9]+ " "$LOGS/sparse_kernels.log"
  timeout 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/sparse/test_cuda_flex.py 2>&1 | tail -3
fi

if [ "$(left)" -gt 90 ]; then
  log "4. end-to-end sparse prefill at 130944 tokens, one pass: full vs a_shape vs minference"
  timeout $(( $(left) - 5 )) "$PY" -m kvlab.cli.main bench --random-weights llama-3.1-8b --lengths 130944 \
    --methods full,a_shape,minference --chunk-size none --no-baseline --decode-tokens 4 --warmup-steps 1 \
    --warmup full --json "$OUT/sparse_e2e.json" 2>&1 | tail -8
fi
if [ "$(left)" -gt 60 ]; then
  log "5. the GPU tests of compiled decoding (each compiles a tiny model's step: last, they take time)"
  timeout $(( $(left) - 5 )) "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/core/test_decoding.py \
    tests/core/test_flex_decode.py -k compiled > "$LOGS/pytest_gpu_compiled.log" 2>&1
  echo "pytest exit $?"; tail -6 "$LOGS/pytest_gpu_compiled.log"
fi
log "done"

#!/usr/bin/env bash
# The GPU measurements of the kernel-performance work, in one run, from a bench
# kit (`npm run bench:kit` copies this file to the kit's top folder) or from the
# repository (it then runs the sources through tsx).
#
#   PEAK=66900 OUT=results bash run-gpu.sh          # all steps
#   STEPS="kernels f16" PEAK=... bash run-gpu.sh     # some of them
#
# PEAK   the GPU's FP32 peak in GFLOP/s (from its datasheet: WebGPU does not
#        say); rows then print their percentage of it. Optional.
# OUT    folder for the logs and JSON (default: results)
# STEPS  any of: tune kernels f16 tiles unet (default: all, in that order)
# STEP_TIMEOUT  seconds per step (default 300); a step past it is stopped and
#        the next one runs, so one slow step cannot cost the rest.
# ARGS   more arguments for the kernels, f16 and tiles steps (e.g. "--short")
#
# tune caches its choices per adapter ($SSD_DEPTH_CACHE, else
# ~/.cache/ssd-depth/tuning.json), so the steps after it run tuned.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -f "$HERE/bin/bench.mjs" ]; then
  ROOT="$HERE"; BENCH=(node "$ROOT/bin/bench.mjs")
else
  ROOT="$(dirname "$HERE")"; BENCH=(node --import tsx "$ROOT/bench/main.ts")
fi
OUT="${OUT:-results}"
STEPS="${STEPS:-tune kernels f16 tiles unet}"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
PEAK_ARGS=()
[ -n "${PEAK:-}" ] && PEAK_ARGS=(--peak "$PEAK")
read -r -a EXTRA <<< "${ARGS:-}"
mkdir -p "$OUT"
failed=0

step() { # name, then the bench arguments
  local name="$1"; shift
  echo "== $name: ${BENCH[*]} $*"
  local t0=$SECONDS
  (cd "$ROOT" && timeout "$STEP_TIMEOUT" "${BENCH[@]}" "$@") 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || failed=$((failed + 1))
}

for s in $STEPS; do
  case "$s" in
    tune)    step tune tune ;;
    kernels) step kernels kernels --vs tfjs "${PEAK_ARGS[@]}" "${EXTRA[@]}" --json "$(realpath "$OUT")/kernels.json" ;;
    f16)     step f16 kernels --dtype f16 --only peak,linear "${PEAK_ARGS[@]}" "${EXTRA[@]}" --json "$(realpath "$OUT")/kernels-f16.json" ;;
    tiles)   step tiles tiles --only peak,linear "${PEAK_ARGS[@]}" "${EXTRA[@]}" --json "$(realpath "$OUT")/tiles.json" ;;
    unet)    step unet unet --synthetic bench/configs/ssd1b-unet.json --size 1024 --batch 2 --profile --json "$(realpath "$OUT")/unet.json" ;;
    *) echo "unknown step '$s' (steps: tune kernels f16 tiles unet)"; failed=$((failed + 1)) ;;
  esac
done
echo "run-gpu: $failed step(s) failed; logs and JSON in $OUT"
exit $((failed > 0))

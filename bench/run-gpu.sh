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
# STEPS  any of: features tune kernels f16 tiles unet plans ab (default: all
#        but plans and ab, in that order). features: the adapter's WebGPU features
#        under our Dawn flags and with allow_unsafe_apis, which exposes Dawn's
#        experimental ones (chromium-experimental-subgroup-matrix:
#        cooperative-matrix GEMMs). plans: the peak GEMM (4096x1280x1280) on
#        64x256k8t8 whole and in the plans $PLANS, split tails against serial
#        tails (default: 7r12, 2s56, 4s56, 7s56; 56 blocks leave 264 whole,
#        two waves on 132 SMs). ab: shader versions timed in alternation
#        (below).
# STEP_TIMEOUT  seconds per step (default 300); a step past it is stopped and
#        the next one runs, so one slow step cannot cost the rest.
# ARGS   more arguments for the kernels, f16, tiles and plans steps (e.g.
#        "--short")
# AB_DIR, AB_STEP, AB_ROUNDS  the step ab: the step AB_STEP (default plans)
#        runs with the kit's own shaders ("cur") and with each folder of
#        AB_DIR (default ab/ beside this script; `npm run bench:kit -- --ab
#        NAME=REV` writes ab/NAME, the shader files that differ at git
#        revision REV), one process each, in turn for AB_ROUNDS rounds
#        (default 2), so that drift on the machine falls on every variant; a
#        variant's .wgsl files replace the kit's for its run only (put back
#        after it, and when the script is stopped). Logs and JSON are
#        ab-NAME-ROUND.*; ab.txt has each row's time per variant and round.
#
# The kernels, f16 and tiles steps check every row's output at sampled
# positions against a float64 reference (bench/check.ts): a row that gives
# wrong results prints CHECK FAILED, and its step counts as failed; so does a
# row of ours that does not run (ERROR, such as a shader that does not
# compile).
#
# tune caches its choices per adapter ($SSD_DEPTH_CACHE, else
# ~/.cache/ssd-depth/tuning.json), so the steps after it run tuned.
#
# A bare machine: a kit built with --with-node brings Node (unpacked to a
# temporary folder when `node` is not on the PATH); one built with
# --with-vulkan brings the Vulkan loader and glvnd, unpacked into / when run
# as root on a machine that lacks them (NVIDIA's Vulkan library needs
# libGLdispatch). Where the container has NVIDIA's ICD file under
# /usr/local/nvidia and VK_DRIVER_FILES is unset, it points there (the setup
# that ran on a lent H200: with the loader alone, NVIDIA's ICD did not load).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -f "$HERE/bin/bench.mjs" ]; then
  ROOT="$HERE"; BENCH=(node "$ROOT/bin/bench.mjs")
else
  ROOT="$(dirname "$HERE")"; BENCH=(node --import tsx "$ROOT/bench/main.ts")
fi
if ! command -v node >/dev/null 2>&1 && [ -f "$HERE/node/node.xz" ]; then
  NODE_DIR="$(mktemp -d)"
  xz -dc "$HERE/node/node.xz" > "$NODE_DIR/node" && chmod +x "$NODE_DIR/node" && PATH="$NODE_DIR:$PATH"
  echo "run-gpu: Node $(node --version) from the kit"
fi
if [ -d "$HERE/debs" ] && [ "$(id -u)" = 0 ] && ! { ldconfig -p | grep -q 'libvulkan\.so\.1' && ldconfig -p | grep -q 'libGLdispatch\.so\.0'; }; then
  for f in "$HERE"/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
  echo "run-gpu: unpacked the kit's Vulkan loader and glvnd ($(ls "$HERE/debs" | wc -l) packages)"
fi
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$NV_ICD" ]; then
  export VK_DRIVER_FILES="$NV_ICD"
  echo "run-gpu: VK_DRIVER_FILES=$NV_ICD"
fi
OUT="${OUT:-results}"
STEPS="${STEPS:-features tune kernels f16 tiles unet}"
PLANS="${PLANS:-64x256k8t8/7r12,64x256k8t8/2s56,64x256k8t8/4s56,64x256k8t8/7s56}"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
AB_DIR="${AB_DIR:-$HERE/ab}"
AB_STEP="${AB_STEP:-plans}"
AB_ROUNDS="${AB_ROUNDS:-2}"
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

# features under both flag sets, from the JSON of a one-row bench run each
features() {
  local res; res="$(realpath "$OUT")"
  step features kernels --short --only copy --json "$res/features.json"
  SSD_DEPTH_DAWN_FLAGS="disable-dawn-features=use_vulkan_memory_model,timestamp_quantization enable-dawn-features=allow_unsafe_apis,disable_robustness" \
    step features-unsafe kernels --short --only copy --json "$res/features-unsafe.json"
  node -e '
    const fs = require("fs");
    const read = (f) => { try { return JSON.parse(fs.readFileSync(f, "utf8")).adapter.features; } catch { return null; } };
    const a = read(process.argv[1]), b = read(process.argv[2]);
    if (!a || !b) { console.log("features: a run did not finish"); process.exit(1); }
    console.log("features: " + a.join(", "));
    console.log("with allow_unsafe_apis also: " + (b.filter((f) => !a.includes(f)).join(", ") || "nothing"));
    console.log("chromium-experimental-subgroup-matrix: " + (b.includes("chromium-experimental-subgroup-matrix") ? "exposed" : "not exposed"));
  ' "$res/features.json" "$res/features-unsafe.json" | tee "$OUT/features.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || failed=$((failed + 1))
}

# one bench step; with a label (the step ab), its log and JSON take that name
run_step() { # step [label]
  local s="$1" res; res="$(realpath "$OUT")"
  case "$s" in
    features) features ;;
    tune)    step "${2:-tune}" tune ;;
    kernels) step "${2:-kernels}" kernels --vs tfjs "${PEAK_ARGS[@]}" "${EXTRA[@]}" --json "$res/${2:-kernels}.json" ;;
    f16)     step "${2:-f16}" kernels --dtype f16 --only peak,linear "${PEAK_ARGS[@]}" "${EXTRA[@]}" --json "$res/${2:-kernels-f16}.json" ;;
    tiles)   step "${2:-tiles}" tiles --only peak,linear "${PEAK_ARGS[@]}" "${EXTRA[@]}" --json "$res/${2:-tiles}.json" ;;
    unet)    step "${2:-unet}" unet --synthetic bench/configs/ssd1b-unet.json --size 1024 --batch 2 --profile --json "$res/${2:-unet}.json" ;;
    plans)   step "${2:-plans}" tiles --tiles 64x256k8t8 --only peak --plans "$PLANS" "${PEAK_ARGS[@]}" "${EXTRA[@]}" --json "$res/${2:-plans}.json" ;;
    ab)      ab ;;
    *) echo "unknown step '$s' (steps: features tune kernels f16 tiles unet plans ab)"; failed=$((failed + 1)) ;;
  esac
}

# A/B of shader versions: the kit's own shaders/ ("cur") and each folder of
# $AB_DIR in turn, AB_ROUNDS rounds, each variant's run its own process; a
# variant's .wgsl files stand in shaders/ for its run only.
AB_KEEP=""
ab_restore() { # shaders/ back to the kit's own files
  [ -n "$AB_KEEP" ] || return 0
  local f
  for f in "$ROOT"/shaders/*.wgsl; do [ -e "$AB_KEEP/$(basename "$f")" ] || rm -f "$f"; done
  cp -p "$AB_KEEP"/*.wgsl "$ROOT/shaders/"
}
ab() {
  if [ "$AB_STEP" = ab ]; then echo "ab: AB_STEP=ab would never end"; failed=$((failed + 1)); return; fi
  local variants=(cur) d v r
  for d in "$AB_DIR"/*/; do [ -d "$d" ] && ls "$d"*.wgsl >/dev/null 2>&1 && variants+=("$(basename "$d")"); done
  if [ "${#variants[@]}" = 1 ]; then
    echo "ab: no folder of .wgsl files in $AB_DIR (a kit built with --ab NAME=REV has them)"; failed=$((failed + 1)); return
  fi
  AB_KEEP="$(mktemp -d)"
  cp -p "$ROOT"/shaders/*.wgsl "$AB_KEEP/"
  trap 'ab_restore' EXIT
  trap 'ab_restore; exit 130' INT TERM
  for r in $(seq 1 "$AB_ROUNDS"); do
    for v in "${variants[@]}"; do
      ab_restore
      local what="the kit's own shaders"
      if [ "$v" != cur ]; then
        cp "$AB_DIR/$v"/*.wgsl "$ROOT/shaders/"
        what="$(cd "$AB_DIR/$v" && ls ./*.wgsl | sed 's|^\./||' | tr '\n' ' ')from $AB_DIR/$v"
        [ -f "$AB_DIR/$v/FROM" ] && what="$what, $(head -c 60 "$AB_DIR/$v/FROM")"
      fi
      echo "== ab: round $r, $v: $what"
      run_step "$AB_STEP" "ab-$v-$r"
    done
  done
  ab_restore
  rm -rf "$AB_KEEP"; AB_KEEP=""
  trap - EXIT INT TERM
  # each row's time per variant and round (kernel time where the adapter has timestamps, % of PEAK where given)
  node -e '
    const fs = require("fs"), path = require("path");
    const [dir, rounds, ...variants] = process.argv.slice(1);
    const cols = [], table = new Map();
    for (let r = 1; r <= Number(rounds); r++) for (const v of variants) {
      const col = `${v} #${r}`; cols.push(col);
      let j; try { j = JSON.parse(fs.readFileSync(path.join(dir, `ab-${v}-${r}.json`), "utf8")); } catch { continue; }
      const rows = j.results ? j.results.flatMap((x) => x.rows.map((row) => [`${x.tile} ${row.name}`, row])) : (j.rows ?? []).map((row) => [row.name, row]);
      const put = (name, cell) => { if (!table.has(name)) table.set(name, {}); table.get(name)[col] = cell; };
      for (const [name, row] of rows) {
        const ms = row.gpuMs ?? row.ms;
        put(name, ms ? `${ms.toFixed(ms < 10 ? 4 : 1)}${row.peakPct ? ` ${row.peakPct.toFixed(1)}%` : ""}` : "-");
        // the passes of a split GEMM (the wide pass, split_sum), each on a line of its own
        for (const k of row.kernels ?? []) put(`${name} | ${k.label.split(":")[1]}`, k.ms.toFixed(4));
        // and the same passes as one (the op as the engine encodes it unprofiled)
        if (row.onePassMs) put(`${name} | one pass`, `${row.onePassMs.toFixed(4)}${row.onePassPeakPct ? ` ${row.onePassPeakPct.toFixed(1)}%` : ""}`);
      }
    }
    console.log(`ab: ms per row (kernel time where the adapter has timestamp queries; with PEAK, % of it), variants ${variants.join(", ")}`);
    console.log(["row".padEnd(48), ...cols.map((c) => c.padStart(15))].join(" "));
    for (const [name, t] of table) console.log([name.padEnd(48), ...cols.map((c) => (t[c] ?? "-").padStart(15))].join(" "));
  ' "$(realpath "$OUT")" "$AB_ROUNDS" "${variants[@]}" | tee "$OUT/ab.txt"
}

for s in $STEPS; do run_step "$s"; done
echo "run-gpu: $failed step(s) failed; logs and JSON in $OUT"
exit $((failed > 0))

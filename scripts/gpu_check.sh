#!/usr/bin/env bash
# One prepared GPU run: pgan's training step (CUDA and wgpu/Vulkan, with the convolution and
# fusion choices to compare) against the PyTorch reference on the same GPU, per resolution, with
# the paper networks, WGAN-GP + drift, and configs/gpu-256.toml's minibatch per resolution
# (512x512 at that config's default, 16). Writes gpu-<date>-<gpu>.json (one row per resolution
# and contender: batch, ms/step, img/s, ratio to PyTorch, peak memory; the convolution and
# training-step parity checks; the bf16 quality guard) and a markdown table.
#
# 1. Here, on the CPU machine (Rust toolchain; a full CUDA + wgpu build, holding the build lock):
#      scripts/gpu_check.sh --prepare
#    builds the train_step and gpu_conv_parity benches and the pgan command line with
#    `--profile bench --features cuda,wgpu`, strips and packs them into .gpu/bin/<name>.xz (xz
#    packs them a third smaller than gzip: the carry limit is 64 MiB), fetches the Vulkan
#    loader packages into .gl/ (the device image may lack them), and then proves the packed
#    binaries with a dry run (below).
#      scripts/gpu_check.sh --dry-run [--bin PATH]
#    runs this same script end to end on the CPU backend and wgpu on Mesa's lavapipe, at 4x4 and
#    8x8 with a small network, into /tmp/pgan-gpu-dry-run/ (no GPU, no time budget).
#    Run it in the checkout the device session sends (the tool sends the session's own repo), after
#    the last code change: the binary is what gets measured (.gpu/bin/build.txt says its commit).
# 2. On the device (the `run` tool; the device has no Rust toolchain), from the repository root:
#      command:   bash scripts/gpu_check.sh
#      carry:     [".gpu", ".gl"]
#      timeout_s: 560
#    PyTorch is not carried: the device image's python3 has it (torch 2.11 + CUDA 13 when the
#    device notes were taken) and the script records its version; without it the pytorch rows are
#    missing and the log says why. NVRTC (cubecl's CUDA compiler) is found in the CUDA toolkit or
#    PyTorch's bundled nvidia libraries; Vulkan's loader comes from the carried .gl packages when
#    the image has none.
#    The run stops starting contenders once its budget (PGAN_GPU_BUDGET_S, default 460 s, the
#    kernels' JIT compilation and autotuning included) is spent, and always writes what it has.
#    What comes back in $OUT: gpu-<date>-<gpu>.json and .md, cubecl-cache.tar.gz (cubecl's
#    autotune results and compiled kernels, to carry next time) and gpu_check.log.
# 3. Here again:  scripts/gpu_check.sh --collect FILES_AT
#    copies the JSON and table into docs/bench/ and the cache into .gpu/cache/, so the next
#    device run starts with the kernels tuned and compiled.
#
# Contenders, in priority order (the budget cuts from the end):
#   pytorch                  scripts/torch_reference.py --device cuda (cuDNN, TF32 convolutions:
#                            PyTorch's defaults)
#   parity-cuda              benches/gpu_conv_parity.rs: pgan-cube's op on the paper networks'
#                            layer shapes against an f64 host reference (value and the three
#                            gradients), for every implicit GEMM timed below (the default one
#                            in f32 and bf16, fused and plain; the others f32, fused). On a
#                            machine without tensor cores the op falls back to burn's kernels, so
#                            only this row shows that the kernels timed below compute the
#                            convolution; a failed check marks those rows "wrong results".
#   step-parity-cuda         the same binary: one D step (exact penalty) and one G step of a narrow
#                            network fading in 32x32, losses and every gradient against the CPU's
#                            from the same weights, f32 and bf16, batches of one and two
#                            minibatch-stddev groups; a failure marks that precision's rows.
#   pgan-cuda                PGAN_GPU_CONV=implicit-gemm (pgan-cube's op), fusion on: the default
#   pgan-cuda-bf16           the same with run.precision = "bf16" (bf16 conv inputs, f32
#                            accumulation); its ratio is to PyTorch's f32 (TF32) row. In the dry
#                            run pgan-wgpu-bf16 must be refused by the config check instead.
#   pgan-cuda-autotune       PGAN_GPU_CONV=autotune (burn's conv2d and its autotuner)
#   quality-cuda             the bf16 quality guard: scripts/bench_remedies.sh's baseline (16
#                            modes at 16x16, 12 kimg, seeds 0-2 side by side) trained with the
#                            pgan command line in f32 and in bf16 (both measured in f32: the
#                            weights are f32); modes covered, KL and SWD per precision, and
#                            whether bf16's are within the seeds' noise of f32's. It starts only
#                            with its whole limit (240 s) of the budget left.
#                            The dry run runs it on the CPU backend at 2.5 kimg (16x16 is
#                            grown at 2.4), where the bf16 runs must be refused by the config
#                            check.
#   pgan-wgpu                wgpu on Vulkan; its WGSL compiler has no tensor-core path, so the
#                            op's passes fall back to burn's autotuned kernels (counted in the rows)
#   pgan-cuda-nofusion       PGAN_GPU_FUSION=off
#   pgan-cuda-<algorithm>    other implicit-GEMM algorithms / tile kinds, 64x64 to 256x256 only
# Environment: PGAN_GPU_BUDGET_S, PGAN_GPU_STEPS (timed steps per resolution, default 10; the
# warm-up tick has as many), PGAN_GPU_RESOLUTIONS (default 256,128,64,32,16,8,4,512: largest
# first so a cut budget loses the small ones), PGAN_GPU_CONTENDERS (a space list to run instead),
# PGAN_GPU_QUALITY_KIMG / PGAN_GPU_QUALITY_SEEDS (the quality guard's length and seeds).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=device
BIN=""
COLLECT_FROM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) MODE=prepare ;;
    --dry-run) MODE=dry-run ;;
    --collect) MODE=collect; COLLECT_FROM=${2:?--collect needs the folder the device files are in}; shift ;;
    --bin) BIN=${2:?--bin needs a path}; shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" >&2; }

# --- --prepare: build, strip, pack, fetch the Vulkan loader, dry-run -------------------------
if [ "$MODE" = prepare ]; then
  set -e
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/pgan-ci-target}
  log "building the train_step and gpu_conv_parity benches (profile bench, features cuda,wgpu)"
  build_log=$(mktemp /tmp/pgan-gpu-build.XXXXXX)
  # "name path" of each executable cargo's JSON messages (stdin) report.
  executables() {
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
  }
  exes=$(cargo bench -p pgan-train --features cuda,wgpu --bench train_step --bench gpu_conv_parity \
           --no-run --message-format=json 2>"$build_log" | executables)
  log "building the pgan command line (profile bench, features cuda,wgpu; the bf16 quality guard trains with it)"
  exes="$exes
$(cargo build --profile bench -p pgan --features cuda,wgpu --message-format=json 2>>"$build_log" | executables)"
  mkdir -p .gpu/bin .gpu/cache
  for name in train_step gpu_conv_parity pgan; do
    exe=$(echo "$exes" | awk -v n="$name" '$1 == n {print $2}' | tail -1)
    [ -x "$exe" ] || { tail -n 40 "$build_log" >&2; echo "error: the build made no $name binary (log: $build_log)" >&2; exit 1; }
    strip -o ".gpu/bin/$name" "$exe"
    xz -9e -T0 -f ".gpu/bin/$name"
    rm -f ".gpu/bin/$name.gz"
    log "packed $(du -h ".gpu/bin/$name.xz" | cut -f1) from $exe"
  done
  # What the packed binaries were built from, reported with the device's results.
  echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- crates benches Cargo.toml Cargo.lock || echo ' +uncommitted changes') $(date -u +%Y-%m-%dT%H:%MZ)" > .gpu/bin/build.txt
  if ! ls .gl/*.deb >/dev/null 2>&1; then
    # The device image may lack the Vulkan loader (see the device tool's README).
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update >/dev/null
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  fi
  size=$(du -cm .gpu .gl | tail -1 | cut -f1)
  log "carry size: ${size} MiB (.gpu + .gl; the limit is 64 MiB with the working tree)"
  [ "$size" -lt 56 ] || { echo "error: .gpu + .gl are ${size} MiB, too close to the 64 MiB carry limit" >&2; exit 1; }
  set +e
  exec "$0" --dry-run
fi

# --- --collect: bring the device's files into the repository -------------------------------
if [ "$MODE" = collect ]; then
  set -e
  mkdir -p docs/bench .gpu/cache
  n=0
  for f in "$COLLECT_FROM"/gpu-*.json "$COLLECT_FROM"/gpu-*.md; do
    [ -f "$f" ] && { cp "$f" docs/bench/; n=$((n + 1)); log "docs/bench/$(basename "$f")"; }
  done
  if [ -f "$COLLECT_FROM/cubecl-cache.tar.gz" ]; then
    cp "$COLLECT_FROM/cubecl-cache.tar.gz" .gpu/cache/
    log ".gpu/cache/cubecl-cache.tar.gz (carried by the next run)"
  fi
  [ "$n" -gt 0 ] || { echo "error: no gpu-*.json or gpu-*.md in $COLLECT_FROM" >&2; exit 1; }
  exit 0
fi

# --- device run or dry run --------------------------------------------------------------------
START=$(date +%s)
if [ "$MODE" = dry-run ]; then
  # Outside .gpu, which is carried to the device.
  OUTDIR=${PGAN_GPU_DRY_RUN_OUT:-/tmp/pgan-gpu-dry-run}
  rm -rf "$OUTDIR"
  BUDGET=${PGAN_GPU_BUDGET_S:-100000}
  STEPS=${PGAN_GPU_STEPS:-2}
  RESOLUTIONS=${PGAN_GPU_RESOLUTIONS:-8,4}
  MAIN_RES=$RESOLUTIONS
  EXTRA_RES=8
else
  OUTDIR=${OUT:?OUT is not set: run this through the device tool, or use --dry-run here}
  BUDGET=${PGAN_GPU_BUDGET_S:-460}
  STEPS=${PGAN_GPU_STEPS:-10}
  RESOLUTIONS=${PGAN_GPU_RESOLUTIONS:-256,128,64,32,16,8,4,512}
  MAIN_RES=$RESOLUTIONS
  EXTRA_RES=256,128,64
fi
mkdir -p "$OUTDIR"
WORK=$(mktemp -d /tmp/pgan-gpu-check.XXXXXX)
LOG=$OUTDIR/gpu_check.log
exec 2> >(tee -a "$LOG" >&2)
remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# The binaries: the packed bench builds (or --bin for the training step; the parity check is
# then looked for beside it).
PARITY_BIN=""
PGAN_BIN=""
if [ -z "$BIN" ]; then
  # .gpu/bin/NAME.xz → $WORK/NAME (Python's lzma where the image has no xz).
  unpack() {
    [ -f ".gpu/bin/$1.xz" ] || return 1
    if command -v xz >/dev/null; then
      xz -dc ".gpu/bin/$1.xz" > "$WORK/$1"
    else
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        ".gpu/bin/$1.xz" "$WORK/$1"
    fi && chmod +x "$WORK/$1"
  }
  if unpack train_step; then
    BIN=$WORK/train_step
  else
    echo "error: .gpu/bin/train_step.xz is missing or unreadable: run scripts/gpu_check.sh --prepare here first (and carry .gpu)" >&2
    exit 2
  fi
  unpack gpu_conv_parity && PARITY_BIN=$WORK/gpu_conv_parity
  unpack pgan && PGAN_BIN=$WORK/pgan
else
  PARITY_BIN=$(ls "$(dirname "$BIN")"/gpu_conv_parity* 2>/dev/null | grep -v '\.d$' | head -1)
  # --bin names a deps/ bench binary; the pgan command line is in the profile's folder above.
  for p in "$(dirname "$BIN")/pgan" "$(dirname "$BIN")/../pgan"; do
    [ -x "$p" ] && { PGAN_BIN=$p; break; }
  done
fi
[ -x "$BIN" ] || { echo "error: $BIN is not an executable train_step bench binary" >&2; exit 2; }
[ -n "$PARITY_BIN" ] || log "warning: no gpu_conv_parity binary: the parity row will be missing (rerun --prepare)"
[ -n "$PGAN_BIN" ] || log "warning: no pgan binary: the bf16 quality guard will be missing (rerun --prepare)"

# What the machine has: GPU, driver, PyTorch (the device image ships PyTorch with CUDA in its
# python3; nothing can be installed there).
ENV_JSON=$WORK/environment.json
BUILD=$(cat .gpu/bin/build.txt 2>/dev/null || echo "${BIN} (not packed by --prepare)")
python3 - "$MODE" "$BUILD" > "$ENV_JSON" <<'EOF'
import json, platform, shutil, subprocess, sys
env = {"mode": sys.argv[1], "pgan_build": sys.argv[2], "host": platform.node(),
       "cpus": __import__("os").cpu_count()}
if shutil.which("nvidia-smi"):
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                        "--format=csv,noheader"], capture_output=True, text=True)
    if q.returncode == 0 and q.stdout.strip():
        name, driver, mem = [s.strip() for s in q.stdout.splitlines()[0].split(",")]
        env.update(gpu=name, driver=driver, gpu_memory=mem)
    else:
        env["nvidia_smi_error"] = (q.stderr or q.stdout).strip()[:300]
try:
    import torch
    env["torch"] = torch.__version__
    env["torch_cuda"] = torch.version.cuda
    env["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        env["cudnn"] = torch.backends.cudnn.version()
except Exception as e:  # noqa: BLE001 - reported, not fatal
    env["torch_error"] = repr(e)[:300]
print(json.dumps(env))
EOF
log "environment: $(cat "$ENV_JSON")"

if [ "$MODE" = device ]; then
  python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); sys.exit(0 if e.get("cuda_available") else 1)' "$ENV_JSON" \
    || log "warning: PyTorch sees no CUDA device; its rows will be missing"
  # Vulkan loader for wgpu: carried .deb packages when the image has none.
  if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
    if ls .gl/*.deb >/dev/null 2>&1; then
      for f in .gl/*.deb; do dpkg -x "$f" /; done
      ldconfig
      log "unpacked the carried Vulkan loader (.gl)"
    else
      log "warning: no libvulkan and no .gl packages carried: the wgpu rows will fail"
    fi
  fi
  if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    export VK_ICD_FILENAMES=$VK_DRIVER_FILES
  fi
  # cubecl compiles CUDA kernels with NVRTC, loaded at run time: the toolkit's and PyTorch's
  # bundled copies, wherever this image keeps them.
  nvrtc_dirs=$(python3 - <<'EOF'
import glob, os, site
dirs = ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
for sp in site.getsitepackages():
    dirs += glob.glob(os.path.join(sp, "nvidia", "*", "lib")) + glob.glob(os.path.join(sp, "nvidia", "cu*", "lib"))
print(":".join(d for d in dirs if glob.glob(os.path.join(d, "libnvrtc.so*"))))
EOF
)
  export LD_LIBRARY_PATH=${nvrtc_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  log "NVRTC from: ${nvrtc_dirs:-(not found; cubecl will search the default paths)}"
fi

# cubecl's autotune results and compiled kernels, kept between runs: a cubecl.toml in the
# contenders' working directory points both caches at one folder, seeded from the carried tar.
CACHE=$WORK/cubecl-cache
mkdir -p "$CACHE"
if [ -f .gpu/cache/cubecl-cache.tar.gz ]; then
  tar -xzf .gpu/cache/cubecl-cache.tar.gz -C "$CACHE" && log "seeded the cubecl cache from .gpu/cache"
fi
cat > "$WORK/cubecl.toml" <<EOF
[autotune]
level = "balanced"
cache = { file = "$CACHE" }

[compilation]
cache = { file = "$CACHE" }
EOF
if [ "$MODE" = dry-run ]; then
  # A software rasteriser takes minutes per shape at higher levels.
  sed -i 's/level = "balanced"/level = "minimal"/' "$WORK/cubecl.toml"
fi

# --- contenders --------------------------------------------------------------------------------
ROWS=$WORK/rows.jsonl
: > "$ROWS"
if [ "$MODE" = dry-run ]; then
  PRESET_ARGS=()
  TORCH_NET=(--device cpu --fmap-base 2048 --fmap-max 128 --latent 128 --threads 2)
  BATCH_ENV=(PGAN_BENCH_BATCH=8)
  TORCH_BATCH=(--batch 8)
  GPU=wgpu   # lavapipe stands in for the CUDA contenders' code paths
  PARITY_CASES=small
  # The quality guard's plumbing on the CPU backend, which must refuse its bf16 runs.
  DEFAULT_CONTENDERS="pytorch parity-$GPU step-parity-$GPU pgan-cpu pgan-$GPU pgan-$GPU-bf16 pgan-$GPU-autotune quality-cpu pgan-$GPU-nofusion pgan-$GPU-simple_sync_strided-mma"
  QUALITY=(PGAN_SEEDS=0 PGAN_KIMG=2.5 PGAN_JOBS=2 PGAN_EVAL_NUM=64)
else
  PRESET_ARGS=(--paper)
  TORCH_NET=(--device cuda --fmap-base 8192 --fmap-max 512 --latent 512)
  BATCH_ENV=(PGAN_BENCH_MINIBATCH_FROM="$ROOT/configs/gpu-256.toml")
  TORCH_BATCH=(--minibatch-from "$ROOT/configs/gpu-256.toml")
  GPU=cuda
  PARITY_CASES=paper
  DEFAULT_CONTENDERS="pytorch parity-cuda step-parity-cuda pgan-cuda pgan-cuda-bf16 pgan-cuda-autotune quality-cuda pgan-wgpu pgan-cuda-nofusion pgan-cuda-simple_sync_strided-mma pgan-cuda-simple_async_cyclic-cmma pgan-cuda-specialized_tma-mma"
  QUALITY=(PGAN_SEEDS="${PGAN_GPU_QUALITY_SEEDS:-0 1 2}" PGAN_KIMG="${PGAN_GPU_QUALITY_KIMG:-12}" PGAN_JOBS=6 PGAN_EVAL_NUM=256)
fi
CONTENDERS=${PGAN_GPU_CONTENDERS:-$DEFAULT_CONTENDERS}
# The implicit GEMMs the contenders time, default first: the parity check covers each.
PARITY_CONVS="implicit-gemm"
for c in $CONTENDERS; do
  case "$c" in
    pgan-*-*-cmma|pgan-*-*-mma) rest=${c#pgan-*-}; PARITY_CONVS="$PARITY_CONVS implicit-gemm:${rest%-*}:${rest##*-}" ;;
  esac
done

# Tags each JSON line of a contender's output and appends it to $ROWS.
collect() {
  python3 - "$1" "$2" >> "$ROWS" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
for line in open(path, errors="replace"):
    line = line.strip()
    if line.startswith("{"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        row["contender"] = name
        print(json.dumps(row))
EOF
}

run_contender() {
  local name=$1 left cap need=40
  left=$(remaining)
  # The quality guard yields nothing unless its runs finish: it starts only with room for its
  # whole limit.
  case "$name" in quality-*) need=260 ;; esac
  if [ "$left" -lt "$need" ]; then
    log "skip $name: ${left}s of the budget left"
    echo "{\"contender\": \"$name\", \"skipped\": \"budget\"}" >> "$ROWS"
    return
  fi
  # No one contender may take the whole budget: the first pgan one also pays for compiling the
  # shared kernels (cached for the rest), the autotune one for tuning every conv shape.
  case "$name" in
    pytorch) cap=120 ;;
    parity-*) cap=90 ;;
    step-parity-*) cap=120 ;;
    pgan-cuda|pgan-cpu|pgan-wgpu) cap=200 ;;
    quality-*) cap=240 ;;
    *) cap=120 ;;
  esac
  [ "$MODE" = dry-run ] && cap=1800
  cap=$(( cap < left - 20 ? cap : left - 20 ))
  local out=$WORK/$name.jsonl err=$WORK/$name.err
  local res=$MAIN_RES
  local envs=(PGAN_BENCH_STEPS="$STEPS" "${BATCH_ENV[@]}")
  log "run $name (limit ${cap}s)"
  local t0
  t0=$(date +%s)
  case "$name" in
    pytorch)
      (cd "$WORK" && timeout "$cap" python3 "$ROOT/scripts/torch_reference.py" "${TORCH_NET[@]}" \
         "${TORCH_BATCH[@]}" --resolutions "$res" --steps "$STEPS" --warmup 3) > "$out" 2> "$err"
      ;;
    parity-*|step-parity-*)
      [ -n "$PARITY_BIN" ] || { log "skip $name: no gpu_conv_parity binary"; return; }
      local parts=convs
      [ "${name#step-}" != "$name" ] && parts=steps
      (cd "$WORK" && timeout "$cap" env PGAN_BENCH_BACKEND="${name##*-}" \
         PGAN_PARITY_CASES="$PARITY_CASES" PGAN_PARITY_CONVS="$PARITY_CONVS" \
         PGAN_PARITY_PARTS="$parts" "$PARITY_BIN") > "$out" 2> "$err"
      ;;
    pgan-*)
      local rest=${name#pgan-} backend conv=implicit-gemm fusion=on precision=f32
      backend=${rest%%-*}
      rest=${rest#"$backend"}
      rest=${rest#-}
      case "$rest" in
        "") ;;
        autotune) conv=autotune ;;
        bf16) precision=bf16 ;;
        nofusion) fusion=off ;;
        *) conv="implicit-gemm:${rest%-*}:${rest##*-}"; res=$EXTRA_RES ;;
      esac
      (cd "$WORK" && timeout "$cap" env "${envs[@]}" PGAN_BENCH_BACKEND="$backend" \
         PGAN_BENCH_RESOLUTIONS="$res" PGAN_GPU_CONV="$conv" PGAN_GPU_FUSION="$fusion" \
         PGAN_BENCH_PRECISION="$precision" \
         "$BIN" "${PRESET_ARGS[@]}") > "$out" 2> "$err"
      ;;
    quality-*)
      # f32 and bf16 side by side on the remedies benchmark's baseline (16 modes at 16x16,
      # seeds in parallel); the runs work under $WORK, where cubecl finds cubecl.toml.
      [ -n "$PGAN_BIN" ] || { log "skip $name: no pgan binary"; return; }
      (cd "$WORK" && timeout "$cap" env PGAN="$PGAN_BIN" PGAN_BACKEND="${name#quality-}" \
         PGAN_VARIANTS="baseline bf16" "${QUALITY[@]}" PGAN_WORK="$WORK/quality" \
         PGAN_OUT="$WORK/quality.json" bash "$ROOT/scripts/bench_remedies.sh") > "$out" 2> "$err"
      ;;
    *) log "unknown contender $name"; return ;;
  esac
  local rc=$?
  log "$name: exit $rc after $(( $(date +%s) - t0 ))s"
  collect "$name" "$out"
  if [ "$rc" -ne 0 ]; then
    echo "{\"contender\": \"$name\", \"exit\": $rc, \"stderr_tail\": $(tail -c 600 "$err" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" >> "$ROWS"
  fi
  { echo "--- $name stderr (tail)"; tail -n 30 "$err"; } >> "$LOG"
}

for c in $CONTENDERS; do
  run_contender "$c"
done

# --- results ------------------------------------------------------------------------------------
(cd "$CACHE" && tar -czf "$OUTDIR/cubecl-cache.tar.gz" .) && log "cubecl cache: $(du -h "$OUTDIR/cubecl-cache.tar.gz" | cut -f1)"
python3 - "$ROWS" "$ENV_JSON" "$OUTDIR" "$STEPS" "$CONTENDERS" "$MODE" <<'EOF'
import datetime, json, re, sys
rows_path, env_path, outdir, steps, contenders, mode = sys.argv[1:7]
env = json.load(open(env_path))
raw = [json.loads(l) for l in open(rows_path) if l.strip()]
# The convolution parity checks (gpu_conv_parity) have their own section; a (backend, conv,
# precision) with a failed check marks the timed rows that ran those kernels.
parity = [r for r in raw if r.get("bench") == "gpu_conv_parity"]
# The training-step parity (gpu_step_parity): one D and G step against the CPU's; a failure
# marks every timed row of that (backend, precision).
step_rows = [r for r in raw if r.get("bench") == "gpu_step_parity"]
# The bf16 quality guard (scripts/bench_remedies.sh's runs, one line per run).
quality = [r for r in raw if r.get("bench") == "remedies"]
raw = [r for r in raw if r.get("bench") not in ("gpu_conv_parity", "gpu_step_parity", "remedies")]
parity_failed = {(r.get("backend"), r.get("conv"), r.get("precision")) for r in parity if not r.get("ok")}
step_failed = {(r.get("backend"), r.get("precision")) for r in step_rows if not r.get("ok")}
torch = {r["resolution"]: r for r in raw if r.get("contender") == "pytorch" and "resolution" in r}
rows, notes = [], []
for r in raw:
    if "resolution" not in r:
        notes.append(r)
        continue
    is_torch = r["contender"] == "pytorch"
    row = {
        "resolution": r["resolution"],
        "contender": r["contender"],
        "batch": r.get("batch"),
        "ms_per_step": r.get("ms_per_step"),
        "img_per_s": r.get("img_per_s"),
    }
    t = torch.get(r["resolution"])
    if (not is_torch and t and r.get("ms_per_step") and t.get("ms_per_step")
            and t.get("batch") == r.get("batch")):
        row["ratio_to_pytorch"] = round(r["ms_per_step"] / t["ms_per_step"], 3)
    if is_torch:
        row["peak_memory_mb"] = r.get("max_memory_allocated_mb")
        row["peak_memory_kind"] = "torch.cuda.max_memory_allocated" if "max_memory_allocated_mb" in r else None
        row["reserved_memory_mb"] = r.get("max_memory_reserved_mb")
        for k in ("tf32_conv", "tf32_matmul", "cudnn_benchmark", "d_ms", "g_ms"):
            if k in r:
                row[k] = r[k]
    else:
        row["peak_memory_mb"] = r.get("device_peak_reserved_mb")
        row["peak_memory_kind"] = "cubecl pool, peak reserved at tick ends" if "device_peak_reserved_mb" in r else None
        for k in ("backend", "conv", "fusion", "precision", "conv_gemm_passes", "conv_fallback_passes", "peak_rss_mb"):
            if k in r:
                row[k] = r[k]
        if ((r.get("backend"), r.get("conv"), r.get("precision")) in parity_failed
                or (r.get("backend"), r.get("precision")) in step_failed):
            row["parity_failed"] = True
    if "error" in r:
        row["error"] = r["error"]
    rows.append(row)
rows.sort(key=lambda x: (x["resolution"], contenders.split().index(x["contender"]) if x["contender"] in contenders.split() else 99))
def spread(values):
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return None
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return {"mean": mean, "sd": sd, "n": len(values)}

precision_quality = None
if quality:
    by = {}
    for variant, precision in (("baseline", "f32"), ("bf16", "bf16")):
        runs = [r for r in quality if r.get("variant") == variant]
        ok = [r for r in runs if "error" not in r]
        by[precision] = {
            "contender": runs[0]["contender"] if runs else None,
            "seeds": [r.get("seed") for r in ok],
            "failed": [{"seed": r.get("seed"), "error": r["error"]} for r in runs if "error" in r],
            "kimg": ok[0].get("kimg") if ok else None,
            **{k: spread([r.get(k) for r in ok])
               for k in ("modes_covered", "kl_to_uniform", "swd_x1e3", "msssim_fake", "train_seconds")},
        }
    # Within the seeds' noise: the difference of the means at most twice its standard error
    # (and at least one mode, the count's own step).
    verdict = {}
    f, b = by["f32"], by["bf16"]
    for k, floor in (("modes_covered", 1.0), ("swd_x1e3", 0.0), ("kl_to_uniform", 0.0)):
        if f[k] and b[k] and f[k]["n"] > 1 and b[k]["n"] > 1:
            diff = b[k]["mean"] - f[k]["mean"]
            noise = 2 * (f[k]["sd"] ** 2 / f[k]["n"] + b[k]["sd"] ** 2 / b[k]["n"]) ** 0.5
            verdict[k] = {"bf16_minus_f32": diff, "noise": max(noise, floor),
                          "within_noise": abs(diff) <= max(noise, floor)}
    precision_quality = {"what": "scripts/bench_remedies.sh baseline (WGAN-GP + stddev, 16 modes "
                                 "at 16x16) trained with f32 or bf16 convolutions, same seeds; "
                                 "both measured with f32 inference (the weights are f32)",
                         "f32": f, "bf16": b, "verdict": verdict}

gpu = env.get("gpu") or ("cpu-dry-run" if env.get("mode") == "dry-run" else "unknown-gpu")
slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
doc = {
    "bench": "gpu_check",
    "date": date,
    "gpu": gpu,
    "driver": env.get("driver"),
    "torch": env.get("torch"),
    "torch_cuda": env.get("torch_cuda"),
    "cudnn": env.get("cudnn"),
    "steps_timed": int(steps),
    "what": "one training step: D step with the exact WGAN-GP penalty and drift, G step, EMA "
            "(pgan: the whole loop incl. data; PyTorch: the two optimizer steps on random reals); "
            "paper networks; minibatch per resolution from configs/gpu-256.toml",
    "command": "bash scripts/gpu_check.sh  (run tool, carry .gpu .gl)",
    "environment": env,
    "rows": rows,
    "conv_parity": parity,
    "step_parity": step_rows,
    "precision_quality": precision_quality,
    "notes": notes,
}
base = f"{outdir}/gpu-{date}-{slug}"
with open(base + ".json", "w") as f:
    json.dump(doc, f, indent=1)

def fmt(v, nd=1):
    return "—" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

lines = [f"GPU: {gpu}, driver {env.get('driver')}, PyTorch {env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}), {date}, {steps} timed steps per row.", "",
         "| res | contender | batch | ms/step | img/s | vs PyTorch | peak MiB | conv passes gemm/fallback |",
         "|---|---|---|---|---|---|---|---|"]
for r in rows:
    if "error" in r:
        lines.append(f"| {r['resolution']}² | {r['contender']} | {fmt(r['batch'])} | error: {r['error'][:80]} | | | | |")
        continue
    ratio = r.get("ratio_to_pytorch")
    passes = (f"{r['conv_gemm_passes']}/{r['conv_fallback_passes']}"
              if "conv_gemm_passes" in r else "")
    name = r["contender"] + (" ⚠ wrong results (parity failed)" if r.get("parity_failed") else "")
    lines.append(f"| {r['resolution']}² | {name} | {fmt(r['batch'])} | {fmt(r['ms_per_step'])} | "
                 f"{fmt(r['img_per_s'])} | {'' if ratio is None else f'{ratio:.2f}x'} | "
                 f"{fmt(r.get('peak_memory_mb'), 0)} | {passes} |")
if parity:
    # One line per (backend, conv, precision, fusion): checks passed and the worst errors.
    groups = {}
    for r in parity:
        groups.setdefault((r.get("backend"), r.get("conv"), r.get("precision"), r.get("fusion")), []).append(r)
    lines += ["", "Convolution parity (pgan-cube's op against an f64 host reference: value, input, "
              "weight and bias gradients; `gpu_conv_parity`):", "",
              "| backend | conv | precision | fusion | checks ok | worst rel. RMS | worst rel. max | passes gemm/fallback |",
              "|---|---|---|---|---|---|---|---|"]
    def worst(rs, key):
        vals = [v if isinstance(v, (int, float)) else float("nan")
                for r in rs for v in (r.get(key) or {}).values()]
        return "—" if not vals else ("NaN" if any(v != v for v in vals) else f"{max(vals):.1e}")
    for (backend, conv, precision, fusion), rs in groups.items():
        ok = sum(1 for r in rs if r.get("ok"))
        passes = f"{sum(r.get('gemm_passes', 0) for r in rs)}/{sum(r.get('fallback_passes', 0) for r in rs)}"
        lines.append(f"| {backend} | {conv} | {precision} | {fusion} | {ok}/{len(rs)} | "
                     f"{worst(rs, 'relative_rms')} | {worst(rs, 'relative_max')} | {passes} |")
    for r in parity:
        if not r.get("ok"):
            lines.append(f"\nparity failed: {json.dumps(r)[:400]}")
if step_rows:
    lines += ["", "Training-step parity (one D step with the exact penalty and one G step against "
              "the CPU's from the same weights: relative RMS error of the losses and of all "
              "gradients; `gpu_step_parity`):", "",
              "| backend | precision | res | batch | ok | D loss | D grads | G loss | G grads | tolerance |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    def e(r, q):
        v = (r.get("relative_rms") or {}).get(q)
        return "—" if v is None else (v if isinstance(v, str) else f"{v:.1e}")
    for r in step_rows:
        status = "yes" if r.get("ok") else ("error: " + r["error"][:60] if "error" in r else "**no**")
        lines.append(f"| {r.get('backend')} | {r.get('precision')} | {r.get('resolution')}² | "
                     f"{r.get('batch')} | {status} | {e(r, 'd_loss')} | {e(r, 'd_grads')} | "
                     f"{e(r, 'g_loss')} | {e(r, 'g_grads')} | {r.get('tolerance')} |")
if precision_quality:
    def ms(x, nd):
        return "—" if not x else f"{x['mean']:.{nd}f} ± {x['sd']:.{nd}f}"
    lines += ["", f"bf16 quality guard ({precision_quality['what']}, {precision_quality['f32']['kimg'] or precision_quality['bf16']['kimg']} kimg, "
              "mean ± sd over seeds; `scripts/bench_remedies.sh`):", "",
              "| precision | seeds | modes covered (of 16) | KL to uniform | SWD ×1e3 | MS-SSIM gen | train s | failed runs |",
              "|---|---|---|---|---|---|---|---|"]
    for precision in ("f32", "bf16"):
        q = precision_quality[precision]
        failed = "; ".join(f"seed {x['seed']}: {x['error'].splitlines()[-1][:100]}" for x in q["failed"]) or "none"
        lines.append(f"| {precision} | {q['seeds']} | {ms(q['modes_covered'], 1)} | {ms(q['kl_to_uniform'], 2)} | "
                     f"{ms(q['swd_x1e3'], 0)} | {ms(q['msssim_fake'], 3)} | {ms(q['train_seconds'], 0)} | {failed} |")
    for k, v in precision_quality["verdict"].items():
        lines.append(f"\n{k}: bf16 − f32 = {v['bf16_minus_f32']:+.3g}, noise ±{v['noise']:.3g}: "
                     f"{'within the noise' if v['within_noise'] else '**outside the noise**'}")
for n in notes:
    lines.append(f"\nnote: {json.dumps(n)[:400]}")
with open(base + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nwrote {base}.json and .md")
if mode == "dry-run":
    # The dry run proves the script: every contender must have produced rows, none an error.
    # ...except bf16 on wgpu, which the config check must refuse (naming the option).
    refused = [r for r in rows if r["contender"].endswith("-bf16") and "error" in r]
    wrongly = [r for r in refused if "run.precision" not in r["error"]]
    accepted = [r for r in rows if r["contender"].endswith("-bf16") and "error" not in r]
    # A machine without PyTorch (this CPU machine) cannot run the reference; the device can.
    no_torch = [n for n in notes if n.get("contender") == "pytorch"
                and "No module named 'torch'" in n.get("stderr_tail", "")]
    if no_torch:
        print("note: PyTorch is not installed here, so the dry run has no pytorch rows")
    bad = ([r for r in rows if "error" in r and r not in refused]
           + [n for n in notes if n not in no_torch] + wrongly + accepted)
    missing = [c for c in contenders.split()
               if not any(r["contender"] == c for r in rows + parity + step_rows + quality)
               and not (c == "pytorch" and no_torch)]
    wrong = [r for r in parity + step_rows if not r.get("ok")]
    # The quality guard: its f32 runs train and are measured, its bf16 runs are refused by the
    # config check (the dry run's backend has no bf16), naming the option.
    if precision_quality:
        f, b = precision_quality["f32"], precision_quality["bf16"]
        if f["failed"] or not f["modes_covered"]:
            wrong.append({"quality_f32": f})
        if b["seeds"] or not b["failed"] or any("run.precision" not in x["error"] for x in b["failed"]):
            wrong.append({"quality_bf16": b})
    if bad or missing or wrong:
        sys.exit(f"dry run failed: errors {bad}, contenders without rows {missing}, parity failures {wrong}")
EOF
status=$?
log "done in $(( $(date +%s) - START ))s"
rm -rf "$WORK"
exit $status

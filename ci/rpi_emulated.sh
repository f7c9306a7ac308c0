#!/usr/bin/env bash
# Runs the shipped .tflite models in an emulated Raspberry Pi (arm64 Debian python + the aarch64
# ai-edge-litert wheel under qemu-aarch64) and checks the raw int8 outputs are bit-identical to x86.
#
#   bash ci/rpi_emulated.sh [MODEL.tflite ...]          (default: tflite_models/*.tflite)
#
# Environment:
#   TFDEFAKEQ_RPI_CACHE  where the sysroot, wheels and site-packages are cached
#                        (default ~/.cache/tfdefakeq/rpi; about 250 MB)
#   DEBIAN_MIRROR        default http://deb.debian.org/debian
#   RPI_CPUS             qemu CPU models to try (default "cortex-a72 cortex-a76": Pi 4 and Pi 5)
#   RPI_OUT              folder for inputs/outputs (default: a temp folder)
#   RPI_REPORT           report to write (default benchmarks/results/rpi_emulated.md, by ci/rpi_report.py)
#                        (+ the same name with .csv: one row per model, INT4/INT2 handling, kernels and CPU)
#   RPI_COMMIT           commit recorded in the report (default: git rev-parse HEAD; set it when running
#                        from a `git archive` snapshot, which has no .git)
#
# How: no binfmt_misc, no chroot, no root-only mounts. `debootstrap --foreign` only downloads and
# unpacks an arm64 bookworm base + python3.11 (its second stage, which would need to execute arm64
# binaries, is never run); pip downloads the manylinux aarch64 wheels of ai-edge-litert, numpy and
# pillow from x86 and installs them with --target; `qemu-aarch64-static -L SYSROOT` runs the
# sysroot's python directly (qemu looks up absolute paths in SYSROOT first). XNNPACK's cpuinfo
# reads /proc/cpuinfo, which qemu-user leaves as the host's x86 file; the script writes an ARM
# one at SYSROOT/proc/cpuinfo (per CPU model), which the -L lookup serves instead.
# Emulated timings are NOT latency on a Pi: the script prints none as such.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
CACHE=${TFDEFAKEQ_RPI_CACHE:-$HOME/.cache/tfdefakeq/rpi}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CPUS=${RPI_CPUS:-"cortex-a72 cortex-a76"}
SYSROOT=$CACHE/sysroot
SITE=$CACHE/site-packages
WHEELS=$CACHE/wheels
PYVER=3.11
LITERT=ai-edge-litert==2.3.0
mkdir -p "$CACHE"

log() { printf '[rpi_emulated] %s\n' "$*" >&2; }

# 1. host tools (Debian packages; we are root in CI containers, else run as root once)
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  if [ "$(id -u)" != 0 ]; then log "need root to apt-get install ${need[*]}"; exit 3; fi
  apt-get install -y -q "${need[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
fi

# 2. arm64 sysroot with python3.11, first stage only (download + unpack)
if [ ! -x "$SYSROOT/usr/bin/python$PYVER" ]; then
  log "building arm64 sysroot in $SYSROOT (debootstrap --foreign, bookworm, $MIRROR)"
  rm -rf "$SYSROOT.tmp"
  debootstrap --foreign --arch=arm64 --variant=minbase \
    --include=python3.11-minimal,libpython3.11-stdlib,libexpat1,zlib1g,libffi8,libssl3,ca-certificates \
    bookworm "$SYSROOT.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { log "debootstrap failed: tail of $CACHE/debootstrap.log:"; tail -20 "$CACHE/debootstrap.log" >&2; exit 4; }
  # The first stage unpacks only the base set; the --include'd debs wait in the apt cache for the
  # second stage (which would run arm64 dpkg). Unpacking them is all a python needs.
  # debootstrap leaves proc as a link to the host's /proc: make it a folder for the fake cpuinfo
  if [ -L "$SYSROOT.tmp/proc" ]; then rm "$SYSROOT.tmp/proc"; fi; mkdir -p "$SYSROOT.tmp/proc"
  for deb in "$SYSROOT.tmp"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$SYSROOT.tmp"; done
  rm -rf "$SYSROOT" && mv "$SYSROOT.tmp" "$SYSROOT"
fi
qemu_py() {  # qemu_py CPU args...
  local cpu=$1; shift
  qemu-aarch64-static -cpu "$cpu" -L "$SYSROOT" \
    -E PYTHONPATH="$SITE:$REPO" -E PYTHONNOUSERSITE=1 -E PYTHONDONTWRITEBYTECODE=1 \
    "$SYSROOT/usr/bin/python$PYVER" "$@"
}
if ! version=$(qemu_py cortex-a72 -c 'import platform,sys; print(platform.machine(), sys.version.split()[0])' 2>&1); then
  log "the arm64 python does not start under qemu-aarch64-static: $version"; exit 5
fi
log "sysroot python under qemu: $version"

# 3. aarch64 wheels from PyPI, installed with --target (pip never runs inside the emulator)
if [ ! -f "$SITE/.complete" ]; then
  log "downloading aarch64 wheels ($LITERT numpy pillow) into $WHEELS"
  platforms=()
  for v in 36 35 34 33 32 31 28 27 26 17; do platforms+=(--platform "manylinux_2_${v}_aarch64"); done
  platforms+=(--platform manylinux2014_aarch64)
  PIP_CONSTRAINT= pip download -q -d "$WHEELS" --only-binary=:all: "${platforms[@]}" \
    --python-version $PYVER --implementation cp "$LITERT" numpy pillow
  rm -rf "$SITE"
  PIP_CONSTRAINT= pip install -q --no-index --find-links "$WHEELS" --target "$SITE" --only-binary=:all: \
    "${platforms[@]}" --python-version $PYVER --implementation cp "$LITERT" numpy pillow
  touch "$SITE/.complete"
fi

# 4. models and fixed inputs (made on x86, read by both sides)
if (($#)); then MODELS=("$@"); else MODELS=(tflite_models/*.tflite); fi
OUT=${RPI_OUT:-$(mktemp -d)}
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
mkdir -p "$OUT"
python - "$OUT/inputs.npz" "${MODELS[@]}" <<'EOF'
import sys
import numpy as np
from tfdefakeq.runtime.modelinfo import read_model_info
out, *models = sys.argv[1:]
sizes = sorted({read_model_info(m).input_shapes[0][1] for m in models})
rng = np.random.default_rng(2026)
inputs = {}
for size in sizes:  # smooth colour fields + noise: outputs spread over the int8 range, unlike pure noise
    yy, xx = np.mgrid[0:size, 0:size] / size
    imgs = [128 + 60 * np.sin(2 * np.pi * (a * xx[..., None] + b * yy[..., None])) + rng.normal(0, 12, (size, size, 3))
            for a, b in rng.uniform(0.3, 3, (16, 2, 1, 1, 3))]
    inputs[str(size)] = np.clip(imgs, 0, 255).astype(np.uint8)
np.savez(out, **inputs)
EOF
log "x86 reference outputs"
python ci/rpi_outputs.py "$OUT/inputs.npz" "$OUT/x86.npz" "${MODELS[@]}" >"$OUT/x86.log"

status=0
for cpu in $CPUS; do
  case $cpu in
    cortex-a72) part=0xd08; board="Raspberry Pi 4 Model B (emulated)";;
    cortex-a76) part=0xd0b; board="Raspberry Pi 5 Model B (emulated)";;
    *) part=0xd08; board="emulated $cpu";;
  esac
  mkdir -p "$SYSROOT/proc"
  {
    for i in 0 1 2 3; do
      printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid%s\n' "$i" \
        "$([ "$cpu" = cortex-a76 ] && echo ' atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp' || true)"
      printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 3\n\n' "$part"
    done
    printf 'Revision\t: c03115\nModel\t\t: %s\n' "$board"
  } >"$SYSROOT/proc/cpuinfo"
  log "running under qemu-aarch64 -cpu $cpu"
  start=$(date +%s)
  if ! qemu_py "$cpu" ci/rpi_outputs.py "$OUT/inputs.npz" "$OUT/$cpu.npz" "${MODELS[@]}" >"$OUT/$cpu.log" 2>&1; then
    log "FAILED under $cpu: tail of $OUT/$cpu.log"; tail -20 "$OUT/$cpu.log" >&2; status=1; continue
  fi
  log "$cpu: emulated run took $(( $(date +%s) - start )) s (emulation time, not Pi latency)"
done
# Compare with x86 and write the report from the comparisons (exit 1 if the default configuration differs).
COMMIT=${RPI_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
python ci/rpi_report.py "$OUT" $CPUS --md "${RPI_REPORT:-benchmarks/results/rpi_emulated.md}" \
  --qemu "$(qemu-aarch64-static --version | head -1)" --arm-python "$version" --commit "$COMMIT" --load-before "$LOAD_BEFORE" \
  --wheels $(cd "$WHEELS" && ls *.whl) --models "${MODELS[@]}" --command "bash ci/rpi_emulated.sh $*" || status=1
log "outputs and logs in $OUT"
exit $status

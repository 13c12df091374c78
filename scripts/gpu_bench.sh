#!/usr/bin/env bash
# GPU figures for docs/performance.md and docs/backends.md: the epoch benchmark and the mSMS
# example on wgpu and CUDA, with burn-flex on the same machine's CPUs as the baseline.
#
# Runs from the repository root on a machine with an NVIDIA GPU. Expects, under gpubin/
# (built elsewhere with `cargo build --release --features wgpu[,cuda] --bench epoch --example msms`
# and copied there): `epoch` (the bench binary), `msms` (the example), and under gpubin/data/ a
# GIMVI_DATA_DIR-shaped copy of mop_10x_dot_sample/mop_ref.h5ad and osmfish_smfish/smfish.h5ad,
# plus msms_folds.json (scripts/anchor_folds.py). Writes one JSON per run to $OUT (or
# ./gpu-out), and a log.
#
# Usage: scripts/gpu_bench.sh [backends…]      (default: wgpu cuda flex)
set -uo pipefail
FINAL="${OUT:-gpu-out}"
# Everything goes to $FINAL/w and is packed into $FINAL/gpu.tgz at the end (the device tool
# returns at most 8 files); log.txt is also copied out as it grows.
OUT="$FINAL/w"
mkdir -p "$OUT"
BIN=gpubin
D=gpubin/data
backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(wgpu cuda flex)
# The binaries travel gzip-compressed (a stripped one is ~60 MB).
for f in $BIN/*.gz; do [ -e "$f" ] && gunzip -f "$f"; done
chmod +x $BIN/epoch $BIN/msms 2>/dev/null

# Vulkan loader and NVIDIA ICD for wgpu (the image has the driver, not always the loader).
if [ -d .gl ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
# cubecl's CUDA runtime compiler: the image ships libnvrtc in PyTorch's nvidia wheels.
for d in /usr/local/cuda/lib64 $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cuda_nvrtc", "lib") for p in nvidia.__path__))' 2>/dev/null); do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc
} 2>&1 | tee "$OUT/machine.txt"

# GPU utilisation and memory every second, to show which runs used the GPU.
(while sleep 1; do echo "$(date +%T) $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>&1)"; done) >"$OUT/smi.txt" &
SMI=$!
finish() {
  kill $SMI 2>/dev/null
  cp "$OUT/log.txt" "$FINAL/log.txt" 2>/dev/null
  tar czf "$FINAL/gpu.tgz" -C "$FINAL" w && rm -rf "$OUT"
}
trap finish EXIT

run() { # name, timeout, command…
  local name=$1 limit=$2
  shift 2
  echo "== $(date +%T) $name: $*" | tee -a "$OUT/log.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.json" 2>>"$OUT/log.txt"
  echo "   rc=$? wall=$((SECONDS - t0)) s" | tee -a "$OUT/log.txt"
  grep -E '"(s_per_epoch|median_spearman|peak_rss_mib|backend)"' "$OUT/$name.json" | tr -d ' \n'
  echo
}

for b in "${backends[@]}"; do
  run "paper-$b" 90 $BIN/epoch --synthetic 3005,33,4530,33 --protocol paper --epochs 10 --backend "$b"
  run "msms-real-$b" 120 $BIN/epoch --sc $D/mop_10x_dot_sample/mop_ref.h5ad --spatial $D/osmfish_smfish/smfish.h5ad \
    --folds-from $D/msms_folds.json --protocol paper --epochs 20 --spatial-likelihood poisson --backend "$b"
  run "transcriptome-$b" 150 $BIN/epoch --synthetic 3005,20000,4530,33 --protocol transcriptome --epochs 3 --backend "$b"
  if [ "$b" = "${backends[0]}" ]; then
    echo "== $(date +%T) msms example --quick on $b" | tee -a "$OUT/log.txt"
    t0=$SECONDS
    timeout 200 $BIN/msms --quick --data $D --out "$OUT/msms-quick-$b" --backend "$b" >>"$OUT/log.txt" 2>&1
    echo "   rc=$? wall=$((SECONDS - t0)) s" | tee -a "$OUT/log.txt"
    run "tenx-$b" 120 $BIN/epoch --synthetic 30050,33,4530,33 --protocol paper --epochs 5 --backend "$b"
  fi
done

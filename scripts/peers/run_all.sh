#!/usr/bin/env bash
# Run the Python peers (scvi-tools' GIMVI, Tangram, TISSUE) on every real pair, resumably: a run whose output file
# exists is skipped; a failed run is logged (LOG.md + logs/) and the next one starts. One heavy job at a time, at
# nice 19. See README.md beside this file for the set-up.
#
# Usage: scripts/peers/run_all.sh [STAGE...]   stages: folds paper transcriptome tissue tissue-tangram (default: all)
# Env:   ONLY_PAIRS, ONLY_SEEDS, ONLY_TOOLS (space-separated subsets), THREADS (default 1),
#        PEERS (default /work/peers: venvs, folds/, out/, data/, logs/, LOG.md), DATA (default ../shared/data)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MAIN=$(cd "$HERE/../.." && pwd)
PEERS=${PEERS:-/work/peers}
DATA=${DATA:-$(cd "$MAIN/../shared/data" && pwd)}
ANCHORS=$(cd "$MAIN/../shared/anchors" && pwd)
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(folds paper transcriptome tissue tissue-tangram)
mkdir -p "$PEERS/folds" "$PEERS/out" "$PEERS/logs" "$PEERS/data"
LOG=$PEERS/LOG.md
[ -f "$LOG" ] || printf '# Peer runs\n\n| pair | tool | protocol | seed | median Spearman | wall s | CPU s | note |\n|---|---|---|---|---|---|---|---|\n' >"$LOG"
# one thread: under CPU contention (compiles beside us) torch's 2-thread OpenMP barriers made small-batch
# training 15-30x slower (measured); the big Tangram matrices ran as fast on 1 thread as on 2
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
THREADS=${THREADS:-1}

ZEISEL=$DATA/zeisel2015_gpsfish/zeisel550_ref.h5ad
MOP=$DATA/mop_10x_dot_sample/mop_ref.h5ad
OSMFISH=$DATA/osmfish_smfish/smfish.h5ad
STARMAP=$DATA/starmap_mpfc/mpfc-starmap.loom
PDAC_SC=$DATA/pdac_card/pdac_sc.h5ad
PDAC_ST=$DATA/pdac_card/pdac_st.h5ad
read -r -a PAIRS <<<"${ONLY_PAIRS:-zeisel-osmfish zeisel-starmap mop-osmfish mop-starmap pdac}"
read -r -a SEEDS <<<"${ONLY_SEEDS:-0 1 2}"
read -r -a TOOLS <<<"${ONLY_TOOLS:-scvi tangram}"
sc_of() { case $1 in zeisel-*) echo "$ZEISEL" ;; mop-*) echo "$MOP" ;; pdac) echo "$PDAC_SC" ;; esac; }
sp_of() { case $1 in *-osmfish) echo "$OSMFISH" ;; *-starmap) echo "$STARMAP" ;; pdac) echo "$PDAC_ST" ;; esac; }
# TISSUE reads the spatial side with anndata.read_h5ad: the starMAP loom is converted once (see convert_starmap)
sp_h5ad_of() { case $1 in *-starmap) echo "$PEERS/data/mpfc-starmap.h5ad" ;; *) sp_of "$1" ;; esac; }
lik_of() { case $1 in *-osmfish) echo poisson ;; *) echo nb ;; esac; }
has() { local s; for s in "${STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
logline() { echo "| $1 | $2 | $3 | $4 | $5 | $6 | $7 | ${8:-} |" >>"$LOG"; }

folds() {
  local p
  for p in "${PAIRS[@]}"; do
    [ -s "$PEERS/folds/$p.json" ] && continue
    nice -n 19 "$PEERS/venv-scvi/bin/python" "$MAIN/scripts/anchor_folds.py" --sc "$(sc_of "$p")" \
      --spatial "$(sp_of "$p")" --folds 5 --seed 0 >"$PEERS/folds/$p.json.tmp" && mv "$PEERS/folds/$p.json.tmp" "$PEERS/folds/$p.json"
  done
}

# peer PAIR TOOL PROTOCOL SEED
peer() {
  local p=$1 tool=$2 proto=$3 seed=$4
  local out=$PEERS/out/$p/${tool}_${proto}_s$seed.h5ad
  local venv=$PEERS/venv-scvi; [ "$tool" = tangram ] && venv=$PEERS/venv-tangram
  [ -f "$out" ] && return 0
  mkdir -p "$PEERS/out/$p"
  local log=$PEERS/logs/${p}_${tool}_${proto}_s$seed.log
  echo "$(date -Is) start $p $tool $proto s$seed" >&2
  if nice -n 19 "$venv/bin/python" "$HERE/peer_impute.py" --tool "$tool" --protocol "$proto" --seed "$seed" \
      --sc "$(sc_of "$p")" --spatial "$(sp_of "$p")" --spatial-likelihood "$(lik_of "$p")" \
      --folds-from "$PEERS/folds/$p.json" --threads "$THREADS" --out "$out" >"$log" 2>&1; then
    "$PEERS/venv-scvi/bin/python" - "${out%.h5ad}.json" >>"$LOG" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = sys.argv[1].split("/")[-2]
m = d["median_spearman"]
print(f"| {p} | {d['tool_key']} | {d['protocol']} | {d['seed']} | {m:.4f} | {d['wall_seconds_total']:.0f} | "
      f"{d['cpu_seconds_total']:.0f} | {d['genes_nan']} genes NaN |")
PY
  else
    logline "$p" "$tool" "$proto" "$seed" FAILED - - "$(tail -1 "$log" | tr '|' '/' | cut -c1-200) (logs/$(basename "$log"))"
  fi
}

convert_starmap() {
  local dst=$PEERS/data/mpfc-starmap.h5ad
  [ -f "$dst" ] && return 0
  nice -n 19 "$PEERS/venv-tissue/bin/python" - "$STARMAP" "$dst" <<'PY'
import sys, h5py, numpy as np, anndata
src, dst = sys.argv[1:]
with h5py.File(src, "r") as f:
    x = np.asarray(f["matrix"][:], dtype=np.float32).T  # loom: genes x cells
    genes = [g.decode() if isinstance(g, bytes) else str(g) for g in f["row_attrs"]["Gene"][:]]
    xy = np.asarray(f["col_attrs"]["Spatial_coordinates"][:], dtype=np.float64)
a = anndata.AnnData(x)
a.obs_names = [str(i) for i in range(a.n_obs)]
a.var_names = genes
a.obsm["spatial"] = xy
a.write_h5ad(dst + ".tmp.h5ad")
import os; os.replace(dst + ".tmp.h5ad", dst)
print(dst, a.shape)
PY
}

# tissue PAIR SEED
tissue() {
  local p=$1 seed=$2
  local out=$PEERS/out/$p/tissue_s$seed.json
  [ -f "$out" ] && return 0
  mkdir -p "$PEERS/out/$p"
  local log=$PEERS/logs/${p}_tissue_s$seed.log times=$PEERS/logs/${p}_tissue_s$seed.times.json
  echo "$(date -Is) start $p tissue s$seed" >&2
  if OMP_NUM_THREADS=1 nice -n 19 "$PEERS/venv-tissue/bin/python" "$HERE/timed.py" "$times" -- \
      "$PEERS/venv-tissue/bin/python" "$ANCHORS/tissue_calibration.py" --sc "$(sc_of "$p")" --spatial "$(sp_h5ad_of "$p")" \
      --folds-from "$PEERS/folds/$p.json" --seed "$seed" --json "$out.tmp" >"$log" 2>&1; then
    mv "$out.tmp" "$out"
    "$PEERS/venv-scvi/bin/python" - "$out" "$times" >>"$LOG" <<'PY'
import json, sys
d, t = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
p = sys.argv[1].split("/")[-2]
ce = d["results"]["asymmetric"]["tissue_rule"]["calibration_error"]
print(f"| {p} | tissue (SpaGE) | calibration | {d['config']['seed']} | {d['accuracy']['median_spearman']:.4f} | "
      f"{t['wall_s']:.0f} | {t['cpu_s']:.0f} | asymmetric CE {ce} |")
PY
  else
    logline "$p" tissue calibration "$seed" FAILED - - "$(tail -1 "$log" | tr '|' '/' | cut -c1-200) (logs/$(basename "$log"))"
  fi
}

# tissue_tangram PAIR SEED  (TISSUE with method="tangram": scripts/peers/tissue_tangram.py)
tissue_tangram() {
  local p=$1 seed=$2
  local out=$PEERS/out/$p/tissue_tangram_s$seed.json
  [ -f "$out" ] && return 0
  mkdir -p "$PEERS/out/$p"
  local log=$PEERS/logs/${p}_tissue_tangram_s$seed.log times=$PEERS/logs/${p}_tissue_tangram_s$seed.times.json
  echo "$(date -Is) start $p tissue-tangram s$seed" >&2
  if nice -n 19 "$PEERS/venv-tt/bin/python" "$HERE/timed.py" "$times" -- \
      "$PEERS/venv-tt/bin/python" "$HERE/tissue_tangram.py" --sc "$(sc_of "$p")" --spatial "$(sp_h5ad_of "$p")" \
      --folds-from "$PEERS/folds/$p.json" --seed "$seed" --json "$out.tmp" >"$log" 2>&1; then
    mv "$out.tmp" "$out"
    "$PEERS/venv-scvi/bin/python" - "$out" "$times" >>"$LOG" <<'PY'
import json, sys
d, t = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
p = sys.argv[1].split("/")[-2]
ce = d["results"]["asymmetric"]["tissue_rule"]["calibration_error"]
print(f"| {p} | tissue (Tangram) | calibration | {d['config']['seed']} | {d['accuracy']['median_spearman']:.4f} | "
      f"{t['wall_s']:.0f} | {t['cpu_s']:.0f} | asymmetric CE {ce} |")
PY
  else
    logline "$p" "tissue (Tangram)" calibration "$seed" FAILED - - "$(tail -1 "$log" | tr '|' '/' | cut -c1-200) (logs/$(basename "$log"))"
  fi
}

has folds && folds
if has paper; then
  for seed in "${SEEDS[@]}"; do
    for p in "${PAIRS[@]}"; do
      for tool in "${TOOLS[@]}"; do peer "$p" "$tool" paper "$seed"; done
    done
  done
fi
if has transcriptome; then
  for seed in "${SEEDS[@]}"; do
    for tool in "${TOOLS[@]}"; do peer zeisel-osmfish "$tool" transcriptome "$seed"; done
  done
fi
if has tissue || has tissue-tangram; then convert_starmap; fi
if has tissue; then
  for seed in "${SEEDS[@]}"; do for p in "${PAIRS[@]}"; do tissue "$p" "$seed"; done; done
fi
if has tissue-tangram; then
  for p in "${PAIRS[@]}"; do tissue_tangram "$p" 0; done
fi
echo "$(date -Is) run_all.sh done: ${STAGES[*]}" >&2

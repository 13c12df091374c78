#!/usr/bin/env bash
# gimvi on a real pair (the 10x motor-cortex reference + osmFISH or starMAP), the paper's
# protocol, every fold of the anchor's split, model seeds 0..N-1: median Spearman over all
# shared genes per seed and their mean (docs/performance.md, attempt 27).
#
# Needs: GIMVI_DATA_DIR (default ../shared/data), results/anchor/{msms,mpfc}_folds.json
# (scripts/anchor_folds.py), python3.
# Usage: scripts/real_pair_sweep.sh msms|mpfc OUT_DIR EPOCHS [N_SEEDS] [extra gimvi bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PAIR=${1:?msms or mpfc}
OUT=${2:?OUT_DIR}
EPOCHS=${3:?EPOCHS}
N=${4:-3}
shift $(( $# < 4 ? $# : 4 ))
EXTRA=("$@")
D=${GIMVI_DATA_DIR:-../shared/data}
case $PAIR in
  msms) SP=$D/osmfish_smfish/smfish.h5ad; LIK=poisson ;;
  mpfc) SP=$D/starmap_mpfc/mpfc-starmap.loom; LIK=nb ;;
  *) echo "unknown pair $PAIR (msms or mpfc)" >&2; exit 2 ;;
esac
FOLDS=results/anchor/${PAIR}_folds.json
for f in "$D/mop_10x_dot_sample/mop_ref.h5ad" "$SP" "$FOLDS"; do
  [ -f "$f" ] || { echo "missing $f (see ../shared/data/README.md and scripts/anchor_folds.py)" >&2; exit 1; }
done
mkdir -p "$OUT"
BENCH=$(cargo bench --bench epoch --no-run 2>&1 | grep -o 'target/release/deps/epoch-[0-9a-f]*' | head -1)
export RAYON_NUM_THREADS=2
for seed in $(seq 0 $((N - 1))); do
  for f in 0 1 2 3 4; do
    "$BENCH" --sc "$D/mop_10x_dot_sample/mop_ref.h5ad" --spatial "$SP" --spatial-likelihood $LIK \
      --folds-from "$FOLDS" --fold $f --protocol paper --epochs "$EPOCHS" --seed "$seed" \
      --kappa "${KAPPA:-5}" "${EXTRA[@]}" >"$OUT/gimvi-s$seed-f$f.json"
  done
done
python3 - "$OUT" "$N" <<'PY'
import json, statistics as st, sys
out, n = sys.argv[1], int(sys.argv[2])
meds = []
for s in range(n):
    rho = {}
    for f in range(5):
        rho.update(json.load(open(f"{out}/gimvi-s{s}-f{f}.json"))["spearman_per_gene"])
    meds.append(st.median(v for v in rho.values() if v is not None and v == v))
print("gimvi median rho per seed", [round(m, 3) for m in meds], "mean", round(st.mean(meds), 3))
PY

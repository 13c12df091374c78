#!/usr/bin/env bash
# Accuracy of gimvi and scvi-tools' GIMVI over model seeds on the paper-scale synthetic pair:
# every fold, seeds 0..N-1, median Spearman over all genes per seed (docs/performance.md,
# "Accuracy, measured over seeds"). The fold split stays the anchor's seed-0 split; only the
# model seed changes (the anchor script ties both to --seed, so a copy of it with
# scvi.settings.seed read from $MODEL_SEED is written to a temporary file).
#
# Needs: the anchor venv and /tmp/syn/3005,33,4530,33 from scripts/side_by_side.sh.
# Usage: [KAPPA=k] PY=V/bin/python scripts/seed_sweep.sh OUT_DIR EPOCHS [N_SEEDS] [extra gimvi bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?OUT_DIR}
EPOCHS=${2:?EPOCHS}
N=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
EXTRA=("$@")
PY=${PY:?set PY to the anchor venv python}
KAPPA=${KAPPA:-5}
S=/tmp/syn/3005,33,4530,33
mkdir -p "$OUT"
BENCH=$(cargo bench --bench epoch --no-run 2>&1 | grep -o 'target/release/deps/epoch-[0-9a-f]*' | head -1)
ANCHOR=$(mktemp --suffix .py)
sed 's/scvi.settings.seed = a.seed/import os; scvi.settings.seed = int(os.environ.get("MODEL_SEED", a.seed))/' \
  ../shared/anchors/scvi_gimvi_bench.py >"$ANCHOR"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2
for seed in $(seq 0 $((N - 1))); do
  for f in 0 1 2 3 4; do
    "$BENCH" --sc $S/sc.h5ad --spatial $S/sp.h5ad --folds-from $S/folds.json --fold $f \
      --protocol paper --epochs "$EPOCHS" --seed "$seed" --kappa "$KAPPA" "${EXTRA[@]}" >"$OUT/gimvi-s$seed-f$f.json"
  done
  MODEL_SEED=$seed "$PY" "$ANCHOR" --sc $S/sc.h5ad --spatial $S/sp.h5ad --fold all --protocol paper \
    --epochs "$EPOCHS" --kappa "$KAPPA" --threads 2 --json "$OUT/scvi-s$seed.json" >/dev/null 2>&1
done
rm -f "$ANCHOR"
"$PY" - "$OUT" "$N" <<'PY'
import json, statistics as st, sys
out, n = sys.argv[1], int(sys.argv[2])
for tool in ("gimvi", "scvi"):
    meds = []
    for s in range(n):
        if tool == "gimvi":
            rho = {}
            for f in range(5):
                rho.update(json.load(open(f"{out}/gimvi-s{s}-f{f}.json"))["spearman_per_gene"])
        else:
            rho = json.load(open(f"{out}/scvi-s{s}.json"))["spearman_per_gene"]
        meds.append(st.median(v for v in rho.values() if v is not None and v == v))
    print(tool, "median rho per seed", [round(m, 3) for m in meds], "mean", round(st.mean(meds), 3))
PY

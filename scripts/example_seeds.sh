#!/usr/bin/env bash
# The mSMS or mPFC example over model seeds 0..N-1, beside scvi-tools' GIMVI (the anchor) with
# the same seeds, on the anchor's seed-0 gene folds: a table of median Spearman (paper
# protocol) per method and seed (docs/results.md, "Over model seeds"). Runs that already
# have their output are skipped, so the loop can be resumed. The anchor script ties its model
# seed to --seed, which also draws the folds, so a copy of it reading scvi.settings.seed from
# $MODEL_SEED is written to a temporary file and --seed stays 0.
#
# Needs: GIMVI_DATA_DIR (default ../shared/data), results/anchor/PAIR_folds.json
# (scripts/anchor_folds.py), the anchor venv (PY=V/bin/python; its header says how).
# Time on 2 idle cores, per seed: mSMS ~15 min gimvi + ~13 min scvi-tools, mPFC ~19 + ~13.
# Usage: PY=V/bin/python scripts/example_seeds.sh msms|mpfc N
set -euo pipefail
cd "$(dirname "$0")/.."
PAIR=${1:?msms or mpfc}
N=${2:?number of seeds}
PY=${PY:?set PY to the anchor venv python}
D=${GIMVI_DATA_DIR:-../shared/data}
export GIMVI_DATA_DIR=$D
case $PAIR in
  msms) SP=$D/osmfish_smfish/smfish.h5ad; LIK=poisson ;;
  mpfc) SP=$D/starmap_mpfc/mpfc-starmap.loom; LIK=nb ;;
  *) echo "unknown pair $PAIR (msms or mpfc)" >&2; exit 2 ;;
esac
mkdir -p results/anchor_seeds
ANCHOR=$(mktemp --suffix .py)
trap 'rm -f "$ANCHOR"' EXIT
sed 's/scvi.settings.seed = a.seed/import os; scvi.settings.seed = int(os.environ.get("MODEL_SEED", a.seed))/' \
  ../shared/anchors/scvi_gimvi_bench.py >"$ANCHOR"
grep -q MODEL_SEED "$ANCHOR" || { echo "could not patch the anchor's seed line" >&2; exit 1; }
for s in $(seq 0 $((N - 1))); do
  [ -f "results/$PAIR-s$s/report.json" ] ||
    cargo run --release --example "$PAIR" -- --folds-from "results/anchor/${PAIR}_folds.json" \
      --seed "$s" --out "results/$PAIR-s$s"
  [ -f "results/anchor_seeds/${PAIR}_paper_s$s.json" ] ||
    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 MODEL_SEED=$s "$PY" "$ANCHOR" \
      --sc "$D/mop_10x_dot_sample/mop_ref.h5ad" --spatial "$SP" --spatial-likelihood $LIK \
      --protocol paper --fold all --threads 2 --json "results/anchor_seeds/${PAIR}_paper_s$s.json"
done
python3 scripts/seed_table.py "$PAIR" "$N"

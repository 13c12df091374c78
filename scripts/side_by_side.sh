#!/usr/bin/env bash
# gimvi vs scvi-tools' GIMVI, one setting after the other, alternating, on the same files, fold,
# seed, protocol, epochs and thread count (2). The figures of docs/performance.md.
#
# Needs: the anchor's venv (python3 -m venv V && V/bin/pip install "scvi-tools==1.4.2" loompy),
# ../shared/anchors/scvi_gimvi_bench.py, and `cargo bench --bench epoch --no-run` done.
# Usage: PY=V/bin/python scripts/side_by_side.sh OUT_DIR [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?OUT_DIR}
ROUNDS=${2:-1}
PY=${PY:?set PY to the anchor venv python}
A=../shared/anchors/scvi_gimvi_bench.py
mkdir -p "$OUT"
BENCH=$(cargo bench --bench epoch --no-run 2>&1 | grep -o 'target/release/deps/epoch-[0-9a-f]*' | head -1)
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2

# setting name | sizes | protocol | epochs
settings=(
  "paper|3005,33,4530,33|paper|10"
  "paper100|3005,33,4530,33|paper|100"
  "tenx|30050,33,4530,33|paper|10"
  "transcriptome|3005,20000,4530,33|transcriptome|3"
)
for round in $(seq 1 "$ROUNDS"); do
  for s in "${settings[@]}"; do
    IFS='|' read -r name sizes protocol epochs <<<"$s"
    dir=/tmp/syn/$sizes
    if [ ! -f "$dir/sc.h5ad" ]; then
      "$PY" scripts/anchor_synthetic.py "$sizes" "$dir"
      "$PY" scripts/anchor_folds.py --sc "$dir/sc.h5ad" --spatial "$dir/sp.h5ad" >"$dir/folds.json"
    fi
    echo "== round $round, $name: gimvi"
    "$BENCH" --sc "$dir/sc.h5ad" --spatial "$dir/sp.h5ad" --folds-from "$dir/folds.json" --fold 0 \
      --protocol "$protocol" --epochs "$epochs" >"$OUT/$name-gimvi-$round.json"
    grep -E '"(s_per_epoch|peak_rss_mib|median_spearman)"' "$OUT/$name-gimvi-$round.json" | tr -d ' \n'; echo
    echo "== round $round, $name: scvi-tools"
    "$PY" "$A" --sc "$dir/sc.h5ad" --spatial "$dir/sp.h5ad" --fold 0 --protocol "$protocol" \
      --epochs "$epochs" --threads 2 --json "$OUT/$name-scvi-$round.json" >/dev/null 2>&1
    "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: v for k, v in d.items() if not isinstance(v, (list, dict))})" "$OUT/$name-scvi-$round.json"
  done
done

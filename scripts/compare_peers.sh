#!/usr/bin/env bash
# gimvi beside the Python peers on every real pair, on the peers' own folds: for each pair and
# model seed, `gimvi evaluate` trains gimvi (the settings in GIMVI_ARGS; default: none, i.e. the
# default fit) and scores it, the per-gene mean × library, k-NN and every peer imputation found
# under $PEERS/out/{pair}/{tool}_{protocol}_s{seed}.h5ad (scripts/peers/run_all.sh makes them)
# with the same Rust scorer. Then scripts/results_table.py prints one table per pair.
#
# Usage: scripts/compare_peers.sh OUTDIR            (env: PAIRS, SEEDS, PROTOCOL, GIMVI_ARGS,
#                                   PEERS=/work/peers, DATA=../shared/data, BIN=target/release/gimvi)
# GIMVI_ARGS=--skip-gimvi scores only the baselines and the peers (no training).
# Writes OUTDIR/{pair}_s{seed}.json and .md, OUTDIR/table.md. Existing reports are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/compare_peers.sh OUTDIR}
PEERS=${PEERS:-/work/peers}
DATA=${DATA:-${GIMVI_DATA_DIR:-../shared/data}}
PROTOCOL=${PROTOCOL:-paper}
read -r -a PAIRS <<<"${PAIRS:-zeisel-osmfish zeisel-starmap mop-osmfish mop-starmap pdac}"
read -r -a SEEDS <<<"${SEEDS:-0 1 2}"
read -r -a EXTRA <<<"${GIMVI_ARGS:-}"
mkdir -p "$OUT"
# BIN: a copy of the binary, so that rebuilding the tree does not change a running sweep.
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin gimvi --quiet
  BIN=target/release/gimvi
fi

sc_of() { case $1 in zeisel-*) echo "$DATA/zeisel2015_gpsfish/zeisel550_ref.h5ad" ;;
  mop-*) echo "$DATA/mop_10x_dot_sample/mop_ref.h5ad" ;; pdac) echo "$DATA/pdac_card/pdac_sc.h5ad" ;; esac; }
sp_of() { case $1 in *-osmfish) echo "$DATA/osmfish_smfish/smfish.h5ad" ;;
  *-starmap) echo "$DATA/starmap_mpfc/mpfc-starmap.loom" ;; pdac) echo "$DATA/pdac_card/pdac_st.h5ad" ;; esac; }
lik_of() { case $1 in *-osmfish) echo poisson ;; *) echo nb ;; esac; }
# The paper's protocol as the peers run it: latent 8, 100 epochs, 95 % of the cells for
# training; the transcriptome protocol: scvi-tools' defaults (latent 10, 200 epochs, 90 %).
case $PROTOCOL in
  paper) PROTO=(--latent 8 --epochs 100 --train-fraction 0.95) ;;
  transcriptome) PROTO=(--latent 10 --epochs 200 --train-fraction 0.9 --protocol transcriptome) ;;
  *) echo "PROTOCOL must be paper or transcriptome" >&2; exit 2 ;;
esac

for pair in "${PAIRS[@]}"; do
  for seed in "${SEEDS[@]}"; do
    json=$OUT/${pair}_s$seed.json
    [ -s "$json" ] && continue
    peers=()
    for tool in scvi tangram; do
      f=$PEERS/out/$pair/${tool}_${PROTOCOL}_s$seed.h5ad
      label=$([ $tool = scvi ] && echo "scvi-tools GIMVI" || echo "Tangram")
      [ -f "$f" ] && peers+=(--peer "$label=$f")
    done
    echo "$(date -Is) $pair seed $seed (${#peers[@]} peer flags)" >&2
    start=$SECONDS
    "$BIN" evaluate --quiet --sc "$(sc_of "$pair")" --spatial "$(sp_of "$pair")" \
      --spatial-likelihood "$(lik_of "$pair")" --folds-from "$PEERS/folds/$pair.json" \
      --seed "$seed" "${PROTO[@]}" "${EXTRA[@]}" "${peers[@]}" --json "$json.tmp" >"$OUT/${pair}_s$seed.md"
    mv "$json.tmp" "$json"
    echo "  $((SECONDS - start)) s" >&2
  done
done
python3 scripts/results_table.py "$OUT" | tee "$OUT/table.md"

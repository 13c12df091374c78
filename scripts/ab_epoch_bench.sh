#!/usr/bin/env bash
# Two builds of the epoch bench, alternating on the bench's synthetic pair (fold 0, seed 0, the
# same flags for both): the speed check of docs/performance.md (issue 33).
# Build each with `cargo bench --bench epoch --no-run` in its own worktree, then:
# Usage: scripts/ab_epoch_bench.sh BIN_A BIN_B OUT_DIR [rounds=3] [extra flags...]
set -euo pipefail
A=${1:?BIN_A}; B=${2:?BIN_B}; OUT=${3:?OUT_DIR}; ROUNDS=${4:-3}; shift $(( $# < 4 ? $# : 4 ))
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for s in "paper|3005,33,4530,33|paper|10" "paper100|3005,33,4530,33|paper|100" \
           "transcriptome|3005,20000,4530,33|transcriptome|3"; do
    IFS='|' read -r name sizes proto epochs <<<"$s"
    for who in a b; do
      bin=$A; [ $who = b ] && bin=$B
      "$bin" --synthetic "$sizes" --protocol "$proto" --epochs "$epochs" "$@" >"$OUT/$name-$who-$round.json" 2>/dev/null
    done
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
for name in ("paper", "paper100", "transcriptome"):
    row = {}
    for who in ("a", "b"):
        d = [json.load(open(f"{out}/{name}-{who}-{r}.json")) for r in range(1, rounds + 1)]
        row[who] = (statistics.median(x["s_per_epoch"] for x in d), d[0].get("median_spearman"))
    print(f"{name}: A {row['a'][0]:.4f} s/epoch, B {row['b'][0]:.4f} (B/A {row['b'][0] / row['a'][0]:.2f}); "
          f"medians {row['a'][1]} / {row['b'][1]}")
PY

#!/usr/bin/env python3
"""Median Spearman (paper protocol) per method and model seed, gimvi's example reports beside
scvi-tools' GIMVI anchor runs on the same folds, as a markdown table (docs/results.md, "Over
model seeds").

Usage: scripts/seed_table.py PAIR N|A-B [RESULTS_DIR]
  reads RESULTS_DIR/PAIR-sS/report.json (cargo run --release --example PAIR -- --seed S ...)
  and RESULTS_DIR/anchor_seeds/PAIR_paper_sS.json (the anchor with scvi.settings.seed = S)
  for S = 0..N-1 (or A..B); RESULTS_DIR defaults to results. Written by scripts/example_seeds.sh.
  ANCHOR=a0,a1,... (the anchor's medians, one per seed of the list in order, e.g. from
  docs/results.md) stands in for the anchor files when they are absent. Runs with --ensemble M add rows "… ×M"; the
  comparisons below the table (κ*, κ*/avg, the average over κ = 0/1/5, the best fixed κ) are made
  for the one-model and the ensemble rows alike.
"""
import os
import json
import statistics as st
import sys


def parse_seeds(arg):
    """N → seeds 0..N-1; A-B → seeds A..B (inclusive)."""
    if "-" in arg:
        first, last = (int(v) for v in arg.split("-"))
        return list(range(first, last + 1))
    return list(range(int(arg)))


def main():
    pair, seeds = sys.argv[1], parse_seeds(sys.argv[2])
    n = len(seeds)
    root = sys.argv[3] if len(sys.argv) > 3 else "results"
    rows = {}  # method -> [median per seed]
    for s in seeds:
        report = json.load(open(f"{root}/{pair}-s{s}/report.json"))
        for m in report["methods"]:
            rows.setdefault(m["name"], []).append(m["median_spearman_paper"])
    anchor = []
    given = os.environ.get("ANCHOR")
    for i, s in enumerate(seeds):
        path = f"{root}/anchor_seeds/{pair}_paper_s{s}.json"
        if given and not os.path.exists(path):
            anchor.append(float(given.split(",")[i]))
            continue
        a = json.load(open(path))
        rho = [v for v in a["spearman_per_gene"].values() if v is not None and v == v]
        anchor.append(st.median(rho))
    head = " | ".join(f"seed {s}" for s in seeds)
    print(f"| method | {head} | mean | min–max |")
    print("|---|" + "---|" * (n + 2))

    def line(name, vals):
        cells = " | ".join(f"{v:.3f}" for v in vals)
        print(f"| {name} | {cells} | **{st.mean(vals):.3f}** | {min(vals):.3f}–{max(vals):.3f} |")

    line("scvi-tools GIMVI (κ = 5), anchor", anchor)
    for name, vals in rows.items():
        if len(vals) == n:
            line(name, vals)
    suffixes = [""] + sorted({k[k.index(" ×"):] for k in rows if " ×" in k})
    for suffix in suffixes:
        print()
        for prefix, label in (("gimVI κ* ", "κ*"), ("gimVI κ*/avg", "κ*/avg")):
            star = next((v for k, v in rows.items()
                         if k.startswith(prefix) and k.endswith(suffix) and (suffix or " ×" not in k)
                         and len(v) == n), None)
            if star is not None:
                diffs = [g - a for g, a in zip(star, anchor)]
                print(f"{label}{suffix} − anchor per seed: {', '.join(f'{d:+.3f}' for d in diffs)}; "
                      f"mean {st.mean(diffs):+.3f}")
        avg = rows.get(f"gimVI avg κ=0,1,5{suffix}")
        if avg is not None and len(avg) == n:
            diffs = [g - a for g, a in zip(avg, anchor)]
            print(f"avg κ=0,1,5{suffix} − anchor per seed: {', '.join(f'{d:+.3f}' for d in diffs)}; "
                  f"mean {st.mean(diffs):+.3f}")
        names = [f"gimVI κ={k}{suffix}" for k in (0, 1, 5)]
        best = {k: v for k, v in rows.items() if k in names}
        if len(best) == 3:
            per_seed = [max(v[s] for v in best.values()) for s in range(n)]
            diffs = [b - a for b, a in zip(per_seed, anchor)]
            print(f"best of κ = 0/1/5{suffix} per seed: {', '.join(f'{v:.3f}' for v in per_seed)}; "
                  f"mean {st.mean(per_seed):.3f}; − anchor {', '.join(f'{d:+.3f}' for d in diffs)}, "
                  f"mean {st.mean(diffs):+.3f}")

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Per-gene comparison with scvi-tools' GIMVI anchor over model seeds (docs/results.md, "Per
gene, paired with the anchor").

The median over 16 genes (mSMS) moves by ±0.05 with the model seed for both tools, so this
looks at the genes themselves: for every method and gene, Spearman ρ (paper scoring) averaged
over the seeds; the gene-by-gene difference from the anchor (same gene, same seeds), its mean
over genes with a standard error across genes, and how many genes gimvi scores higher.

Usage: scripts/gene_table.py PAIR N|A-B DIR_PATTERN [DIR_PATTERN ...]
  DIR_PATTERN holds {s} for the model seed, e.g. 'results/msms-e3-s{s}'; every
  DIR/report.json of a seed is read and their methods merged by name (the first report
  giving a method wins). The anchor is read from results/anchor_seeds/PAIR_paper_sS.json
  (ANCHOR_DIR overrides results/anchor_seeds), for S = 0..N-1 (or A..B).
"""
import json
import math
import os
import statistics as st
import sys

from seed_table import parse_seeds


def main():
    pair, seeds, patterns = sys.argv[1], parse_seeds(sys.argv[2]), sys.argv[3:]
    n = len(seeds)
    if not patterns:
        sys.exit(__doc__)
    anchor_dir = os.environ.get("ANCHOR_DIR", "results/anchor_seeds")
    methods = {}  # name -> seed -> gene -> rho
    for s in seeds:
        for pattern in patterns:
            path = os.path.join(pattern.format(s=s), "report.json")
            if not os.path.exists(path):
                continue
            for m in json.load(open(path))["methods"]:
                per_seed = methods.setdefault(m["name"], {})
                if s in per_seed:
                    continue
                per_seed[s] = {g["gene"]: g["spearman_paper"] for g in m["per_gene"]}
    anchor = {}
    for s in seeds:
        a = json.load(open(f"{anchor_dir}/{pair}_paper_s{s}.json"))
        anchor[s] = {g.lower(): v for g, v in a["spearman_per_gene"].items()}

    def seed_mean(per_seed, gene):
        vals = [per_seed[s].get(gene) for s in seeds]
        vals = [v for v in vals if v is not None and v == v]
        return st.mean(vals) if len(vals) == n else None

    genes = sorted(anchor[seeds[0]])
    a_mean = {g: seed_mean(anchor, g) for g in genes}
    print(f"{pair}: {len(genes)} genes, {n} model seeds of each tool; per gene, ρ averaged over seeds\n")
    print("| method | mean over genes | median over genes | − anchor, mean ± SE over genes | genes above the anchor |")
    print("|---|---|---|---|---|")
    a_vals = [a_mean[g] for g in genes if a_mean[g] is not None]
    print(f"| scvi-tools GIMVI (κ = 5), anchor | {st.mean(a_vals):.3f} | {st.median(a_vals):.3f} | — | — |")
    for name, per_seed in methods.items():
        if len(per_seed) < n:
            continue
        lowered = {s: {g.lower(): v for g, v in per_seed[s].items()} for s in per_seed}
        m_mean = {g: seed_mean(lowered, g) for g in genes}
        both = [g for g in genes if m_mean[g] is not None and a_mean[g] is not None]
        if len(both) < 2:
            continue
        diffs = [m_mean[g] - a_mean[g] for g in both]
        se = st.stdev(diffs) / math.sqrt(len(diffs))
        above = sum(d > 0 for d in diffs)
        vals = [m_mean[g] for g in both]
        print(f"| {name} | {st.mean(vals):.3f} | {st.median(vals):.3f} | "
              f"{st.mean(diffs):+.3f} ± {se:.3f} | {above} of {len(both)} |")


if __name__ == "__main__":
    main()

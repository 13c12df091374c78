#!/usr/bin/env python3
"""Li et al. 2022's accuracy score (AS) of new gimvi runs beside peers that were scored earlier.

`gimvi evaluate` ranks the methods of one report; when the peers' imputation files are not at
hand, their rows still stand in docs/results.md (same folds, same Rust scorer). This script
takes, per pair and seed, the report's own rows (gimvi, mean x library, k-NN) and the peers'
rows of a results page (their means over seeds, PCC / SSIM / RMSE / JS), ranks them all with
the scorer's rule (scripts/results_table.py's accuracy_scores) and prints each method's AS,
mean over seeds ± SE. The peers enter with their mean over seeds, not per seed: an
approximation of the table's AS, said so wherever it is quoted.

Usage: scripts/as_beside_table.py REPORT_DIR [RESULTS_MD]   (default docs/results.md)
"""
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from results_table import accuracy_scores, mean_se  # noqa: E402

PEERS = ("scvi-tools GIMVI", "Tangram")


def peer_rows(md):
    """pair -> {peer: [pcc, ssim, rmse, js]} from the first table of each pair's section."""
    out, pair = {}, None
    for line in open(md):
        m = re.match(r"### (\S+): \d+ shared genes", line)
        if m:
            pair = m.group(1)
            continue
        if pair and line.startswith("| ") and line.split("|")[1].strip() in PEERS:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            vals = [float(c.split("±")[0]) for c in cells[5:9]]  # PCC, SSIM, RMSE, JS
            out.setdefault(pair, {}).setdefault(cells[0], vals)
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    md = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "docs", "results.md")
    peers = peer_rows(md)
    scores = {}
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*_s*.json"))):
        pair = re.match(r"(.+)_s\d+\.json$", os.path.basename(path)).group(1)
        rep = json.load(open(path))
        names, means = [], []
        for meth in rep["methods"]:
            if meth["name"] in PEERS:
                continue
            li = meth.get("li2022") or {}
            names.append(meth["name"])
            means.append([li.get(k) for k in ("pcc", "ssim", "rmse", "js")])
        for name, vals in peers.get(pair, {}).items():
            names.append(name)
            means.append(vals)
        for name, a in zip(names, accuracy_scores(means)):
            scores.setdefault(pair, {}).setdefault(name, []).append(a)
    for pair, rows in sorted(scores.items()):
        print(f"{pair}: " + "; ".join(f"{n} {mean_se(v)}" for n, v in rows.items()))


if __name__ == "__main__":
    main()

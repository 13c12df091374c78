#!/usr/bin/env python3
"""One table per real pair of prediction-interval quality: gimvi's calibrated and raw posterior
intervals (the "intervals" section of `gimvi evaluate --json`, one file per model seed, as
scripts/compare_peers.sh writes them) beside TISSUE's (shared/anchors/tissue_calibration.py's
JSON, as scripts/peers/run_all.sh tissue writes it to $PEERS/out/{pair}/tissue_s{seed}.json,
and tissue_tangram_s{seed}.json from its tissue-tangram stage where present).

Usage: python3 scripts/intervals_table.py DIR [PAIR ...]   (env PEERS=/work/peers)

Columns: calibration error (TISSUE's area between the coverage curve and the diagonal over
nominal 0.01..0.99) over all held-out entries and over nonzero measurements; coverage at 80 /
90 / 95 % (mean over genes, all entries; for "given detection" rows over nonzero measurements;
TISSUE's: pooled over entries); the fraction of genes more than 10 points under
nominal at 90 %; the median 90 % interval width in counts. Mean ± standard error over the seeds
found (one value for one seed). gimvi counts an entry covered when lower <= x <= upper; TISSUE's
anchor uses lower < x < upper and its nonzero rule also drops entries whose prediction or CCV is
0 (the anchor's header).
"""
import glob
import json
import math
import os
import re
import sys

PAIRS = ["zeisel-osmfish", "zeisel-starmap", "mop-osmfish", "mop-starmap", "pdac"]


def mean_se(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "—"
    m = sum(values) / len(values)
    if len(values) == 1:
        return f"{m:.3f}"
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return f"{m:.3f} ± {math.sqrt(var / len(values)):.3f}"


def gimvi_rows(directory, pair):
    """{method: {column: [value per seed]}} from gimvi's reports."""
    rows = {}
    seeds = 0
    for path in sorted(glob.glob(os.path.join(directory, f"{pair}_s*.json"))):
        if not re.search(r"_s\d+\.json$", path):
            continue
        with open(path) as f:
            report = json.load(f)
        intervals = report.get("intervals") or []
        if not intervals:
            continue
        seeds += 1
        for r in intervals:
            head = {round(h["nominal"], 2): h for h in r["headline"]}
            cols = rows.setdefault(r["name"], {})
            # The detection-conditional intervals promise coverage of nonzero measurements:
            # their coverage columns are over those.
            cov = "mean_gene_coverage_nonzero" if "given detection" in r["name"] else "mean_gene_coverage"
            for key, value in [
                ("ce", r["calibration_error"]),
                ("ce_nz", r["calibration_error_nonzero"]),
                ("c80", head[0.8][cov]),
                ("c90", head[0.9][cov]),
                ("c95", head[0.95][cov]),
                ("under", None if "given detection" in r["name"] else head[0.9]["genes_under_by_10"]),
                ("width", head[0.9]["median_width"]),
                ("rel", head[0.9]["median_relative_width"]),
            ]:
                cols.setdefault(key, []).append(value)
    return rows, seeds


def tissue_rows(pair):
    """TISSUE's rows: its default SpaGE imputer (tissue_s*.json) and, where run, TISSUE's own
    Tangram wrapper (tissue_tangram_s*.json, scripts/peers/tissue_tangram.py)."""
    peers = os.environ.get("PEERS", "/work/peers")
    rows = {}
    runs = 0
    for prefix, imputer in (("tissue", "SpaGE"), ("tissue_tangram", "Tangram")):
        for path in sorted(glob.glob(os.path.join(peers, "out", pair, f"{prefix}_s*.json"))):
            with open(path) as f:
                d = json.load(f)
            runs += imputer == "SpaGE"
            for variant in ("asymmetric", "symmetric"):
                res = d["results"].get(variant)
                if not res:
                    continue
                alle, rule = res["all_entries"], res["tissue_rule"]
                cols = rows.setdefault(f"TISSUE ({imputer}, {variant})", {})
                for key, value in [
                    ("ce", alle["calibration_error"]),
                    ("ce_nz", rule["calibration_error"]),
                    ("c80", alle["coverage_at"]["0.80"]),
                    ("c90", alle["coverage_at"]["0.90"]),
                    ("c95", alle["coverage_at"]["0.95"]),
                    ("under", alle.get("frac_genes_cov90_below_0.80")),
                    ("width", res["width90_counts"]["median_all_entries"]),
                    ("rel", None),
                ]:
                    cols.setdefault(key, []).append(value)
            secs = d.get("seconds_total")
            if secs is not None:
                rows.setdefault(f"_seconds {imputer}", []).append(secs)
    return rows, runs


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    pairs = sys.argv[2:] or PAIRS
    for pair in pairs:
        g, gs = gimvi_rows(directory, pair)
        t, ts = tissue_rows(pair)
        if not g and not t:
            continue
        print(f"### {pair}: gimvi seeds {gs}, TISSUE runs {ts}\n")
        print("| intervals | CE (all) | CE (nonzero) | coverage 80 % | 90 % | 95 % "
              "| genes > 10 pts under (90 %) | median width 90 % (counts) | width / gene sd |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, cols in list(g.items()) + [(k, v) for k, v in t.items() if not k.startswith("_")]:
            print("| " + " | ".join([name] + [mean_se(cols.get(k, [])) for k in
                  ("ce", "ce_nz", "c80", "c90", "c95", "under", "width", "rel")]) + " |")
        for key in sorted(k for k in t if k.startswith("_seconds")):
            print(f"\nTISSUE ({key.split()[1]}) wall time: {mean_se(t[key])} s for the 5 folds.")
        print()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""One markdown table per pair from `gimvi evaluate --json` reports over seeds.

Usage: scripts/results_table.py DIR[,DIR...] [PAIR...]

Each DIR holds `{pair}_s{seed}.json` (as scripts/compare_peers.sh writes them); the methods of the
reports of one pair and seed in several DIRs (e.g. gimvi settings run apart, peers scored with
`--skip-gimvi`) are merged, a method met twice keeping its first report. For every pair and
method: the mean over seeds ± the standard error of that mean (sample SD / sqrt(n); "—" with one
seed) of the median paper Spearman, the median normalised Spearman, the median Pearson, Li et
al. 2022's mean PCC / SSIM / RMSE / JS and their accuracy score (recomputed within each pair and
seed among all the methods merged there, as gimvi's scorer does: rank 1 of n methods scores 1,
rank n scores 1/n, ties share their average rank, four metrics averaged), and the seconds spent
imputing (all folds). Standard library only.
"""
import glob
import json
import math
import os
import re
import sys


def mean_se(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "—"
    m = sum(values) / len(values)
    if len(values) < 2:
        return f"{m:.3f}"
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m:.3f} ± {sd / math.sqrt(len(values)):.3f}"


def finite(v):
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def accuracy_scores(means):
    """Li 2022's accuracy score of each method from its (pcc, ssim, rmse, js) means."""
    n = len(means)
    score = [0.0] * n
    for k, sign in ((0, 1.0), (1, 1.0), (2, -1.0), (3, -1.0)):
        key = [sign * m[k] if finite(m[k]) else -math.inf for m in means]
        order = sorted(range(n), key=lambda i: key[i])
        ascending = [0.0] * n
        i = 0
        while i < n:
            j = i
            while j + 1 < n and key[order[j + 1]] == key[order[i]]:
                j += 1
            for t in range(i, j + 1):
                ascending[order[t]] = (i + j) / 2 + 1
            i = j + 1
        for i in range(n):
            rank = n + 1 - ascending[i]
            score[i] += (n - rank + 1) / n / 4
    return score


def meth_is_peer(report, name):
    """Whether `name` is an imputation read from a file (`gimvi evaluate --peer`)."""
    peers = report.get("config", {}).get("peers") or []
    return name in peers or name in ("scvi-tools GIMVI", "Tangram")


def merged_reports(roots, wanted):
    """(pair, seed) -> one report whose methods are those of every root, AS recomputed."""
    merged = {}
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "*_s*.json"))):
            m = re.match(r"(.+)_s(\d+)\.json$", os.path.basename(path))
            if not m or (wanted and m.group(1) not in wanted):
                continue
            rep = json.load(open(path))
            key = (m.group(1), int(m.group(2)))
            if key not in merged:
                merged[key] = rep
                continue
            have = {meth["name"] for meth in merged[key]["methods"]}
            merged[key]["methods"] += [x for x in rep["methods"] if x["name"] not in have]
    for rep in merged.values():
        means = []
        for meth in rep["methods"]:
            li = meth.get("li2022") or {}
            means.append([li.get(k) for k in ("pcc", "ssim", "rmse", "js")])
        for meth, a in zip(rep["methods"], accuracy_scores(means)):
            meth["accuracy_score"] = a
    return merged


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    roots = sys.argv[1].split(",")
    wanted = set(sys.argv[2:])
    by_pair = {}
    for (pair, seed), rep in sorted(merged_reports(roots, wanted).items()):
        by_pair.setdefault(pair, []).append((seed, rep))
    for pair, reports in sorted(by_pair.items()):
        seeds = sorted(s for s, _ in reports)
        rows = {}
        order = []
        for _, rep in reports:
            for meth in rep["methods"]:
                name = meth["name"]
                if name not in rows:
                    rows[name] = []
                    order.append(name)
                li = meth.get("li2022") or {}
                rows[name].append(
                    [
                        meth["median_spearman_paper"],
                        meth["median_spearman_tutorial"],
                        meth["median_pearson_paper"],
                        li.get("pcc"),
                        li.get("ssim"),
                        li.get("rmse"),
                        li.get("js"),
                        meth.get("accuracy_score"),
                        meth["seconds"],
                    ]
                )
        first = reports[0][1]
        print(
            f"### {pair}: {len(first['genes'])} shared genes, {first['n_sc_cells']} reference / "
            f"{first['n_spatial_cells']} spatial cells, {first['config']['folds']} folds; "
            f"model seeds {', '.join(map(str, seeds))}\n"
        )
        print(
            "| method | seeds | Spearman (paper) | Spearman (normalised) | Pearson | PCC | SSIM | RMSE | JS | "
            "AS | seconds |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        # The accuracy score ranks the methods of one report: average it only over the seeds
        # whose report holds every method of the table (a peer run for fewer seeds would
        # otherwise mix rankings among different sets of methods).
        full = [i for i, (_, rep) in enumerate(reports) if {m["name"] for m in rep["methods"]} >= set(order)]
        as_of = {name: [] for name in order}
        for i in full:
            for meth in reports[i][1]["methods"]:
                as_of[meth["name"]].append(meth.get("accuracy_score"))
        note = ""
        if len(full) < len(reports):
            note = f"\nAS over seed(s) {', '.join(str(reports[i][0]) for i in full)} only, where every method ran.\n"
        for name in order:
            cols = list(zip(*rows[name]))
            cells = [mean_se(list(c)) for c in cols[:7]] + [mean_se(as_of[name])]
            secs = sum(cols[8]) / len(cols[8])
            # A peer's imputation is read from a file: its training time is not in the report.
            shown = "—" if meth_is_peer(first, name) else f"{secs:.0f}"
            print(f"| {name} | {len(rows[name])} | " + " | ".join(cells) + f" | {shown} |")
        print(note)


if __name__ == "__main__":
    main()

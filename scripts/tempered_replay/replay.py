"""Offline replay of a *tempered* point imputation (issue 34; not in gimvi): each held-out
count imputed as l'^(1-w) * mu^w instead of mu, where l' is the cell's observed spatial library
(over the fold's measured genes, as the model uses it) and mu gimvi's imputation. w = 1 is
gimvi, w = 0 the per-gene mean x library ranking; w in between shrinks the model's cell-to-cell
variation of the gene's share of the library toward none. Per-gene scale does not matter for
the per-gene scores. The normalised Spearman (prediction / l') is the same for every w > 0.

w is chosen per fold on the calibration genes (nested: never the held-out ones) by the
Poisson log-likelihood of their counts with a free scale per gene, over a grid 0, 0.05, ..., 1.
The calibration cells' libraries are rebuilt from the fold's library minus the hidden genes'
counts (the calibration points are dumped cell by cell, gene by gene).

Inputs: the dumps of scripts/interval_replay (DUMP/<pair>_s<seed>/calib_k.tsv, test_k.tsv),
the `gimvi evaluate --json` report of the same run (REPORTS/<pair>_s<seed>.json: gene order and
folds) and the spatial files (DATA, default ../shared/data). PDAC only with PDAC=1 (slow).

    DUMP=/work/sweep/dump REPORTS=/work/sweep/gb [ONLY=substring] python3 scripts/tempered_replay/replay.py

prints per pair the median paper Spearman and mean Pearson (raw counts) of the held-out genes
for w = 1 (model), w = 0 (library), w = 0.5 and the chosen w.
"""
import glob
import json
import os

import h5py
import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

DATA = os.environ.get("DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data"))
DUMP = os.environ.get("DUMP", ".")
REPORTS = os.environ.get("REPORTS", ".")
GRID = np.round(np.arange(0, 1.0001, 0.05), 2)


def spatial(pair):
    """Spatial counts, cells x genes, gene names lower-case (gimvi matches case-insensitively)."""
    if pair == "pdac":
        f = h5py.File(f"{DATA}/pdac_card/pdac_st.h5ad", "r")
        from scipy.sparse import csr_matrix
        x = f["X"]
        X = csr_matrix((x["data"][:], x["indices"][:], x["indptr"][:]), shape=tuple(x.attrs["shape"])).toarray()
        genes = f["var/_index"][:]
    elif pair.endswith("starmap"):
        f = h5py.File(f"{DATA}/starmap_mpfc/mpfc-starmap.loom", "r")
        genes, X = f["row_attrs/Gene"][:], f["matrix"][:].T
    else:
        f = h5py.File(f"{DATA}/osmfish_smfish/smfish.h5ad", "r")
        genes, X = f["var/_index"][:], f["X"][:]
    names = [(g.decode() if isinstance(g, bytes) else g).lower() for g in genes]
    return pd.DataFrame(X, columns=names)


def tempered(grp, w):
    lib = np.maximum(grp["lib"].values, 1.0)
    return lib ** (1 - w) * np.maximum(grp.mu.values, 1e-12) ** w


def scores(df, w):
    out = []
    for _, grp in df.groupby("gene"):
        pred, x = tempered(grp, w), grp.x.values
        s = spearmanr(pred, x).correlation
        p = pearsonr(pred, x).statistic if pred.std() > 0 and x.std() > 0 else 0.0
        out.append((np.nan_to_num(s), np.nan_to_num(p)))
    return out


def poisson_ll(df, w):
    total = 0.0
    for _, grp in df.groupby("gene"):
        pred, x = tempered(grp, w), grp.x.values
        lam = np.maximum(pred * (x.sum() + 1e-9) / pred.sum(), 1e-12)
        total += np.sum(x * np.log(lam) - lam)
    return total


def main():
    only = os.environ.get("ONLY")
    rows = []
    for d in sorted(glob.glob(os.path.join(DUMP, "*_s[0-9]"))):
        run = os.path.basename(d)
        pair = run.rsplit("_s", 1)[0]
        if (pair == "pdac" and not os.environ.get("PDAC")) or (only and only not in run):
            continue
        rep = json.load(open(os.path.join(REPORTS, f"{run}.json")))
        genes = [g.lower() for g in rep["genes"]]
        X = spatial(pair)
        for k in range(5):
            t = pd.read_csv(f"{d}/test_{k}.tsv", sep="\t", header=None, names=["gene", "cell", "x", "mu", "v"])
            test = {genes[g] for g in t.gene.unique()}
            lib = X[[g for g in genes if g not in test]].sum(axis=1).values.astype(float)
            t["lib"] = lib[t.cell.values]
            cal = None
            for f in glob.glob(f"{d}/calib_*.tsv"):
                c = pd.read_csv(f, sep="\t", header=None, names=["split", "ds", "gene", "x", "mu", "v"])
                if not ({genes[g] for g in c.gene.unique()} & test):
                    cal = c
                    break
            parts = []
            for s, grp in cal[cal.ds == 1].groupby("split", sort=True):
                grp = grp.reset_index(drop=True)
                grp["cell"] = np.arange(len(grp)) // grp.gene.nunique()
                hidden = grp.groupby("cell").x.sum().reindex(range(len(lib)), fill_value=0).values
                grp["lib"] = (lib - hidden)[grp.cell.values]
                grp["gene"] = grp.gene + 1000 * s
                parts.append(grp)
            cal = pd.concat(parts)
            w_ll = max(GRID, key=lambda w: poisson_ll(cal, w))
            for rule, w in [("model (w = 1)", 1.0), ("library (w = 0)", 0.0), ("w = 0.5", 0.5), ("w by Poisson LL", w_ll)]:
                for s_, p_ in scores(t, w):
                    rows.append(dict(pair=pair, run=run, rule=rule, w=w, sp=s_, pe=p_))
            print(run, "fold", k, "w", w_ll, flush=True)
    df = pd.DataFrame(rows)
    m = df.groupby(["pair", "run", "rule"]).agg(sp=("sp", "median"), pe=("pe", "mean"), w=("w", "mean")).reset_index()
    print(m.groupby(["pair", "rule"])[["sp", "pe", "w"]].mean().round(3).to_string())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Cut a scRNA-seq reference to its most variable genes plus every gene of a spatial panel.

Used once (docs/notes/results-2026-12.md, "2026-12-08, morning") to ask whether the
transcriptome protocol scores lower because of the reference's 19,972 genes. Variability:
dispersion (variance / mean) of log(1 + 10^4 x / library), z-scored within 20 bins of the mean
(Seurat's recipe). Needs numpy, scipy and anndata (the venv of scripts/anchor_folds.py).

Usage: hvg_subset.py REFERENCE.h5ad SPATIAL.h5ad N OUT.h5ad
"""
import sys

import anndata as ad
import numpy as np
import scipy.sparse as sp


def main():
    ref_path, spatial_path, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ref = ad.read_h5ad(ref_path)
    spatial = ad.read_h5ad(spatial_path)
    x = ref.X.toarray() if sp.issparse(ref.X) else np.asarray(ref.X)
    lib = np.maximum(x.sum(1, keepdims=True), 1.0)
    logn = np.log1p(x / lib * 1e4)
    mean, var = logn.mean(0), logn.var(0)
    disp = np.where(mean > 0, var / np.maximum(mean, 1e-12), 0.0)
    edges = np.quantile(mean[mean > 0], np.linspace(0, 1, 21)[1:-1])
    bins = np.digitize(mean, edges)
    z = np.zeros_like(disp)
    for b in np.unique(bins):
        i = bins == b
        sd = disp[i].std()
        z[i] = (disp[i] - disp[i].mean()) / (sd if sd > 0 else 1.0)
    z[mean == 0] = -np.inf
    panel = set(spatial.var_names.str.lower())
    keep = np.array([g.lower() in panel for g in ref.var_names])
    keep[np.argsort(-z)[:n]] = True
    print(f"{n} most variable + panel genes: {keep.sum()} kept", file=sys.stderr)
    ref[:, keep].copy().write_h5ad(out)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write the gene folds that ../shared/anchors/scvi_gimvi_bench.py uses, as JSON {gene: fold}.

The anchor (scvi-tools' GIMVI) orders the shared genes as the spatial file lists them, permutes
them with numpy's default_rng(seed) and puts the k-th gene of the permutation in fold k % K.
gimvi's paper examples read this file with `--folds-from`, so both tools hold out the very same
genes in every fold.

Usage: python scripts/anchor_folds.py --sc SC.h5ad --spatial SP.(h5ad|loom) [--folds 5]
       [--seed 0] > folds.json      (needs numpy, anndata, h5py: the anchor's venv has them)
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "anchors"))
from scvi_gimvi_bench import load  # noqa: E402  (the anchor's own reader)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sc", required=True)
    ap.add_argument("--spatial", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sc, sp = load(a.sc), load(a.spatial)
    sc.var_names_make_unique()
    sp.var_names_make_unique()
    lower_sc = {g.lower(): g for g in sc.var_names}
    shared = [lower_sc[g.lower()] for g in sp.var_names if g.lower() in lower_sc]
    order = np.random.default_rng(a.seed).permutation(len(shared))
    fold_of = {shared[i]: k % a.folds for k, i in enumerate(order)}
    json.dump(fold_of, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""TISSUE calibration with Tangram as the base imputer instead of SpaGE.

This runs the unchanged calibration anchor ../../../shared/anchors/tissue_calibration.py (imported, not copied: same
arguments, same folds, same CCV / grouping / conformal-interval calls and the same coverage bookkeeping) with one
substitution: every tissue.main.predict_gene_expression(..., method="spage", ...) call it makes is redirected to
method="tangram" (TISSUE 1.0.1's own tangram_impute: scanpy HVG + PCA + Leiden clusters of the reference,
tg.pp_adatas on all shared genes, map_cells_to_space(mode="clusters", density_prior="rna_count_based"),
project_genes), and its output key is stored under the key the anchor reads. SpaGE's n_pv argument is ignored by
tangram_impute. The anchor's fallback to leave-one-gene-out inner folds is refused (one Tangram fit per
calibration gene); such a fold fails instead.

Seeds: numpy and torch are seeded with --seed before each predict_gene_expression call (Tangram's map initialisation
reads numpy's global RNG). TISSUE reseeds numpy with 444 before its inner folds and Leiden uses random_state 0, so
--seed only changes the first-pass (target gene) Tangram fit.

Usage: same arguments as tissue_calibration.py, e.g.
  venv-tissue/bin/python tissue_tangram.py --sc SC.h5ad --spatial SP.h5ad --folds-from F.json --seed 0 --json OUT.json
(needs tangram-sc==1.0.4 and leidenalg in the TISSUE venv).
"""
import json
import os
import sys

ANCHORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "anchors")
sys.path.insert(0, ANCHORS)

import tissue_calibration as anchor  # noqa: E402  (sets the 1-thread environment on import)
import numpy as np  # noqa: E402


def arg(name, default=None):
    argv = sys.argv[1:]
    for i, v in enumerate(argv):
        if v == name and i + 1 < len(argv):
            return argv[i + 1]
        if v.startswith(name + "="):
            return v.split("=", 1)[1]
    return default


def main():
    import logging
    import torch
    import tangram as tg
    import tissue.main as tm
    torch.set_num_threads(1)
    seed = int(arg("--seed", 0))
    original = tm.predict_gene_expression
    calls = []

    def predict_with_tangram(spatial_adata, rna_adata, target_genes, conf_genes=None, method="spage", n_folds=None,
                             **kwargs):
        if n_folds is None:
            raise RuntimeError("leave-one-gene-out inner folds with Tangram refused (one Tangram fit per gene)")
        np.random.seed(seed)
        torch.manual_seed(seed)
        original(spatial_adata, rna_adata, target_genes, conf_genes=conf_genes, method="tangram", n_folds=n_folds,
                 **kwargs)
        spatial_adata.obsm["spage_predicted_expression"] = spatial_adata.obsm.pop("tangram_predicted_expression")
        calls.append(len(target_genes))
        logging.getLogger().setLevel(logging.WARNING)  # tangram sets the root logger to INFO

    tm.predict_gene_expression = predict_with_tangram
    anchor.main()
    out = arg("--json")
    doc = json.load(open(out))
    doc["tool"] = f"tissue-sc 1.0.1 (Tangram {tg.__version__} via tissue.main.tangram_impute)"
    doc["config"]["base_imputer"] = ("tangram: TISSUE's tangram_impute (HVG, PCA, Leiden resolution 0.5 on the "
                                     "log-normalised reference; pp_adatas on all shared genes; mode clusters, "
                                     "density_prior rna_count_based, 1000 epochs); numpy/torch seeded with --seed "
                                     "before each predict_gene_expression call")
    doc["config"]["spage_n_pv"] = "not used (Tangram)"
    doc["accuracy"]["note"] = doc["accuracy"]["note"].replace("SpaGE", "Tangram")
    doc["predict_calls"] = len(calls)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

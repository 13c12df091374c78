#!/usr/bin/env python3
"""Run a peer tool (scvi-tools' GIMVI or Tangram) on a real scRNA-seq + spatial pair with FIXED gene folds and save
its RAW imputation of every shared gene, so that gimvi's own Rust scorer can score every method identically.

The protocol is that of the anchors (../../../shared/anchors/scvi_gimvi_bench.py and tangram_bench.py; they are the
spec, this is an independent implementation of the same steps):
- genes matched case-insensitively; the spatial genes renamed to the reference spelling; "shared" = the shared genes in
  the spatial file's order; var_names_make_unique on both sides;
- folds from --folds-from ({gene: fold}, as scripts/anchor_folds.py writes: the anchors' seed-0 split); the MODEL seed
  is --seed (scvi: scvi.settings.seed once, before the folds, as the anchor; Tangram: numpy and torch seeded before
  every fold, random_state=seed, as its anchor);
- per fold: held-out genes removed from the spatial data; spatial cells with zero counts on the training genes
  dropped; scRNA-seq cells with zero counts on the training genes dropped (transcriptome protocol: zero counts over
  all genes; the scRNA-seq then keeps ALL its genes);
- scvi: GIMVI(generative_distributions=[zinb, --spatial-likelihood], model_library_size=[True, False]),
  paper: n_latent 8, 100 epochs, kappa 5, train_size 0.95; transcriptome: n_latent 10, 200 epochs, kappa 5, default
  train_size; the saved imputation is get_imputed_values(normalized=False) for both protocols;
- tangram: scanpy normalize_total + log1p on the scRNA-seq (Li 2022), tg.pp_adatas(genes=training genes),
  map_cells_to_space(mode="cells", density_prior="rna_count_based", 1000 epochs, lr 0.1), tg.project_genes; the
  projected values of the held-out genes are saved.

Output (--out X.h5ad, plus X.json): AnnData, X float32 dense (all spatial cells of the file x shared genes), entry
(c, g) = imputation of gene g in cell c from the fold that held g out, NaN where c was dropped in that fold;
obs_names "0", "1", ... (file row numbers), obs["row"] int64; var_names shared genes, var["fold"] int64;
uns: tool, protocol, seed, folds_file, train_seconds_per_fold, cpu_seconds_total, wall_seconds_total.
The sidecar JSON holds the per-gene Spearman of the raw held-out counts vs the imputation (over each fold's kept
cells, NaN when either side is constant), its median, and per-fold timings.
"""
import argparse
import json
import os
import resource
import sys
import time

T_START = time.perf_counter()

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "anchors"))


def cpu_seconds():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def dense(m):
    return np.asarray(m.toarray() if hasattr(m, "toarray") else m, dtype=np.float64)


def spearman_per_gene(truth, pred):
    from scipy.stats import spearmanr
    out = []
    for j in range(truth.shape[1]):
        t, p = truth[:, j], pred[:, j]
        if not np.all(np.isfinite(p)) or np.all(t == t[0]) or np.all(p == p[0]):
            out.append(float("nan"))
        else:
            out.append(float(spearmanr(t, p).correlation))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", required=True, choices=["scvi", "tangram"])
    ap.add_argument("--sc", required=True)
    ap.add_argument("--spatial", required=True)
    ap.add_argument("--folds-from", required=True, help="JSON {gene: fold} (scripts/anchor_folds.py)")
    ap.add_argument("--seed", type=int, default=0, help="model seed (the fold split comes from --folds-from)")
    ap.add_argument("--protocol", default="paper", choices=["paper", "transcriptome"])
    ap.add_argument("--spatial-likelihood", default="nb", choices=["nb", "poisson", "zinb"], help="scvi only")
    ap.add_argument("--epochs", type=int, help="default: scvi 100 (paper) / 200 (transcriptome); tangram 1000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="output .h5ad (a .json sidecar is written beside it)")
    a = ap.parse_args()

    import anndata
    import scipy.sparse
    import torch
    from scvi_gimvi_bench import load  # the anchors' own reader (loom read directly with h5py)
    torch.set_num_threads(a.threads)
    if a.tool == "scvi":
        import scvi
        from scvi.external import GIMVI
        scvi.settings.seed = a.seed
        version = f"scvi-tools {scvi.__version__} GIMVI (torch {torch.__version__}, {a.threads} threads, cpu)"
        epochs = a.epochs or (100 if a.protocol == "paper" else 200)
    else:
        import logging
        from threadpoolctl import threadpool_limits
        threadpool_limits(a.threads)
        import scanpy
        import tangram as tg
        logging.getLogger().setLevel(logging.WARNING)
        version = f"tangram-sc {tg.__version__} (torch {torch.__version__}, {a.threads} threads, cpu)"
        epochs = a.epochs or 1000

    t0 = time.perf_counter()
    sc, sp = load(a.sc), load(a.spatial)
    sc.var_names_make_unique()
    sp.var_names_make_unique()
    n_file = sp.n_obs
    sp.obs_names = [str(i) for i in range(n_file)]  # file row numbers
    lower_sc = {g.lower(): g for g in sc.var_names}
    shared_sp = [g for g in sp.var_names if g.lower() in lower_sc]
    sp = sp[:, shared_sp].copy()
    sp.var_names = [lower_sc[g.lower()] for g in shared_sp]
    shared = list(sp.var_names)
    if a.protocol != "transcriptome":
        sc = sc[:, shared].copy()
    raw = json.load(open(a.folds_from))
    by_lower = {str(g).lower(): int(f) for g, f in raw.items()}
    missing = [g for g in shared if g.lower() not in by_lower]
    if missing:
        sys.exit(f"--folds-from {a.folds_from}: no fold for {len(missing)} shared genes, e.g. {missing[:5]}")
    if len(by_lower) != len(shared):
        sys.exit(f"--folds-from {a.folds_from}: {len(by_lower)} genes, but the pair shares {len(shared)}")
    fold_of = {g: by_lower[g.lower()] for g in shared}
    n_folds = max(fold_of.values()) + 1
    load_s = time.perf_counter() - t0

    out = np.full((n_file, len(shared)), np.nan, dtype=np.float32)
    col_of = {g: j for j, g in enumerate(shared)}
    rho, per_fold, train_s_list = {}, [], []
    for fold in range(n_folds):
        held = [g for g in shared if fold_of[g] == fold]
        kept = [g for g in shared if fold_of[g] != fold]
        if not held:
            continue
        sp_train = sp[:, kept].copy()
        keep_cells = dense(sp_train.X).sum(1) > 0
        sp_train = sp_train[keep_cells].copy()
        truth = dense(sp[keep_cells][:, held].X)  # raw held-out counts
        if a.protocol != "transcriptome":
            sc_f = sc[dense(sc[:, kept].X).sum(1) > 0].copy()
        else:
            sc_f = sc[dense(sc.X).sum(1) > 0].copy()
        info = {"fold": fold, "n_held": len(held), "sc_cells": int(sc_f.n_obs), "sc_genes": int(sc_f.n_vars),
                "spatial_cells": int(sp_train.n_obs), "spatial_genes_train": len(kept)}
        if a.tool == "scvi":
            n_latent, train_size = (8, 0.95) if a.protocol == "paper" else (10, None)
            GIMVI.setup_anndata(sc_f)
            GIMVI.setup_anndata(sp_train)
            model = GIMVI(sc_f, sp_train, generative_distributions=["zinb", a.spatial_likelihood],
                          model_library_size=[True, False], n_latent=n_latent)
            t1 = time.perf_counter()
            model.train(max_epochs=epochs, kappa=5.0, accelerator="cpu", enable_progress_bar=False,
                        train_size=train_size)
            train_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            _, imputed = model.get_imputed_values(normalized=False)
            info["impute_s"] = round(time.perf_counter() - t2, 3)
            sc_col = {g: j for j, g in enumerate(sc_f.var_names)}
            pred = np.asarray(imputed, dtype=np.float64)[:, [sc_col[g] for g in held]]
            info.update(n_latent=n_latent, train_size=train_size, epochs=epochs)
        else:
            ad_sc = sc_f.copy()
            ad_sc.X = scipy.sparse.csr_matrix(dense(ad_sc.X).astype(np.float32))
            scanpy.pp.normalize_total(ad_sc)  # Li et al. 2022: median-total normalisation + log1p
            scanpy.pp.log1p(ad_sc)
            ad_sp = sp_train.copy()
            ad_sp.X = dense(ad_sp.X).astype(np.float32)
            t1 = time.perf_counter()
            tg.pp_adatas(ad_sc, ad_sp, genes=kept)
            info["pp_adatas_s"] = round(time.perf_counter() - t1, 3)
            usable = set(ad_sc.uns["training_genes"])
            train_genes = [g.lower() for g in kept if g.lower() in usable]
            np.random.seed(a.seed)
            torch.manual_seed(a.seed)
            t1 = time.perf_counter()
            ad_map = tg.map_cells_to_space(ad_sc, ad_sp, cv_train_genes=train_genes, mode="cells",
                                           density_prior="rna_count_based", num_epochs=epochs, learning_rate=0.1,
                                           device="cpu", random_state=a.seed, verbose=False)
            train_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            ad_ge = tg.project_genes(ad_map, ad_sc.copy())
            info["project_s"] = round(time.perf_counter() - t2, 3)
            if list(ad_ge.obs_names) != list(sp_train.obs_names):
                sys.exit("Tangram's projection lost the spatial cell order")
            gcol = {g: j for j, g in enumerate(ad_ge.var_names)}
            x_ge = dense(ad_ge.X)
            pred = np.column_stack([x_ge[:, gcol[g.lower()]] if g.lower() in gcol else np.full(x_ge.shape[0], np.nan)
                                    for g in held])
            info["tangram_training_genes"] = len(train_genes)
            info["held_out_not_projected"] = [g for g in held if g.lower() not in gcol]
            hist = ad_map.uns["training_history"]["main_loss"]
            info["final_train_score"] = float(hist[-1]) if len(hist) else None
            del ad_map, ad_ge, x_ge
        rows = np.flatnonzero(keep_cells)
        for j, g in enumerate(held):
            out[rows, col_of[g]] = pred[:, j].astype(np.float32)
        r = spearman_per_gene(truth, pred)
        rho.update(zip(held, r))
        finite = [v for v in r if v == v]
        info["train_s"] = round(train_s, 3)
        info["median_spearman"] = float(np.median(finite)) if finite else None
        train_s_list.append(float(train_s))
        per_fold.append(info)
        print(f"fold {fold}: {len(held)} held-out genes, median Spearman {info['median_spearman']}, "
              f"train {train_s:.1f} s", file=sys.stderr, flush=True)

    wall = time.perf_counter() - T_START
    cpu = cpu_seconds()
    res = anndata.AnnData(X=out)
    res.obs_names = [str(i) for i in range(n_file)]
    res.obs["row"] = np.arange(n_file, dtype=np.int64)
    res.var_names = shared
    res.var["fold"] = np.asarray([fold_of[g] for g in shared], dtype=np.int64)
    res.uns["tool"] = version
    res.uns["protocol"] = a.protocol
    res.uns["seed"] = int(a.seed)
    res.uns["folds_file"] = os.path.abspath(a.folds_from)
    res.uns["train_seconds_per_fold"] = np.asarray(train_s_list, dtype=np.float64)
    res.uns["cpu_seconds_total"] = float(cpu)
    res.uns["wall_seconds_total"] = float(wall)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp.h5ad"
    res.write_h5ad(tmp)
    back = anndata.read_h5ad(tmp)  # check it re-reads, identically
    assert back.shape == res.shape and back.X.dtype == np.float32 and not scipy.sparse.issparse(back.X)
    assert np.array_equal(np.isnan(back.X), np.isnan(out)) and np.array_equal(back.X[~np.isnan(out)], out[~np.isnan(out)])
    assert list(back.var_names) == shared and list(back.obs["row"]) == list(range(n_file))
    finite = [v for v in rho.values() if v == v]
    side = {
        "tool": version, "tool_key": a.tool, "protocol": a.protocol, "seed": a.seed, "folds_file": os.path.abspath(a.folds_from),
        "sc": os.path.abspath(a.sc), "spatial": os.path.abspath(a.spatial),
        "spatial_likelihood": a.spatial_likelihood if a.tool == "scvi" else None, "epochs": epochs,
        "n_spatial_cells_file": n_file, "shared_genes": len(shared), "folds": n_folds,
        "nan_entries": int(np.isnan(out).sum()),
        "load_s": round(load_s, 3), "per_fold": per_fold, "train_seconds_per_fold": train_s_list,
        "wall_seconds_total": round(wall, 3), "cpu_seconds_total": round(cpu, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "spearman_per_gene": rho, "genes_scored": len(finite), "genes_nan": len(rho) - len(finite),
        "median_spearman": float(np.median(finite)) if finite else None,
    }
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(side, f, indent=1)
        f.write("\n")
    os.replace(tmp, a.out)  # the .h5ad appears last: its presence marks a finished run
    print(f"{a.out}: median Spearman {side['median_spearman']}, wall {wall:.1f} s, cpu {cpu:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

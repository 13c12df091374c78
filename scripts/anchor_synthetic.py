#!/usr/bin/env python3
"""Write the anchor's synthetic pair (../shared/anchors/scvi_gimvi_bench.py --synthetic) to .h5ad,
so that gimvi's `cargo bench --bench epoch -- --sc … --spatial …` and the anchor run on the very
same counts.

Usage: python scripts/anchor_synthetic.py 3005,20000,4530,33 OUT_DIR [--seed 0]
       (writes OUT_DIR/sc.h5ad and OUT_DIR/sp.h5ad; needs the anchor's venv)
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "anchors"))
from scvi_gimvi_bench import synthetic  # noqa: E402  (the anchor's own generator)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", help="n_sc,genes_sc,n_spatial,genes_spatial")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sc, sp = synthetic(*[int(v) for v in a.sizes.split(",")], a.seed)
    os.makedirs(a.out, exist_ok=True)
    sc.write_h5ad(os.path.join(a.out, "sc.h5ad"))
    sp.write_h5ad(os.path.join(a.out, "sp.h5ad"))


if __name__ == "__main__":
    main()

"""Open an .h5ad written by gimvi with the reference implementation (anndata) and check its
contents. Used by .ci/run after the Rust tests; exits non-zero on any mismatch."""
import sys
from importlib.metadata import version

import anndata
import numpy as np

path = sys.argv[1]
a = anndata.read_h5ad(path)
assert a.shape == (3, 2), a.shape
assert list(a.obs_names) == ["c1", "c2", "c3"], list(a.obs_names)
assert list(a.var_names) == ["Gad2", "Lamp5"], list(a.var_names)
np.testing.assert_array_equal(np.asarray(a.X), np.array([[0, 1], [2, 0], [3, 4]], dtype=np.float32))
np.testing.assert_array_equal(a.layers["variance"], np.full((3, 2), 0.5, dtype=np.float32))
assert a.obsm["X_gimvi"].shape == (3, 3)
np.testing.assert_array_equal(a.obsm["spatial"][2], [5.0, 6.0])
assert list(a.obs["dataset"]) == ["a", "b", "a"]
np.testing.assert_array_equal(a.obs["depth"], [1.5, 2.5, 3.5])
assert list(a.obs["cell_type"].cat.categories) == ["Astro", "Oligo"]
assert list(a.obs["cell_type"]) == ["Astro", "Oligo", "Astro"]
print(f"anndata {version('anndata')} opened {path}: {a}")
print("anndata check passed")

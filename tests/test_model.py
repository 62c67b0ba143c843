"""The masked autoencoder on 16 real tiles (two per class): target statistics the chapter does not check (its other checks are in
nbs/03_model.ipynb)."""

import logging

import numpy as np
import pytest
import torch

from mimeo_nb.data import BandNormalize, load_eurosat
from mimeo_nb.hog import cells_to_patches
from mimeo_nb.model import MaskedAutoencoder

logging.getLogger("timm").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def real16(ms_sample, tmp_path_factory):
    ds = load_eurosat(ms_sample, cache_dir=tmp_path_factory.mktemp("c"), progress=False)
    idx = np.concatenate([np.flatnonzero(ds.labels == k)[:2] for k in range(10)])[:16]  # every class
    return BandNormalize("scale")(torch.from_numpy(np.asarray(ds.images[idx])))


def test_variant_statistics(real16):
    x = real16
    # cell-normalised HOG: almost every cell has a unit histogram (near-empty cells fall short by eps)
    for v in ("C", "D"):
        m = MaskedAutoencoder(target="hog", variant=v)
        norms = cells_to_patches(m.hog(x), 8, 8).reshape(16, 64, 13, 9).norm(dim=-1)
        assert (norms > 0.9).float().mean() > 0.95
    t = MaskedAutoencoder(target="hog", variant="C").targets(x)["hog"]
    assert (t.var(-1) - 1).abs().max() < 0.02  # C: standardised unit cells, variance v / (v + 1e-6) = 1
    # cell-normalised HOG ignores a band's brightness and contrast; raw HOG scales with contrast
    D, F = MaskedAutoencoder(target="hog", variant="D"), MaskedAutoencoder(target="hog", variant="F")
    x2 = x * 4 + 0.25
    assert (D.targets(x2)["hog"] - D.targets(x)["hog"]).abs().mean() < 1e-3
    f1, f2 = F.targets(x)["hog"].reshape(16, 64, 13, 9), F.targets(x2)["hog"].reshape(16, 64, 13, 9)
    torch.testing.assert_close(
        f2.sum(-1), 4 * f1.sum(-1), atol=1e-5, rtol=1e-4
    )  # a cell's total vote scales with contrast
    assert ((f2 - 4 * f1).abs() > 1e-3).float().mean() < 0.01  # and the bins agree but for votes on a bin edge

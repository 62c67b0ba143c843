"""Batched torch HOG (mimeo_nb.hog) on 20 real EuroSAT tiles (two per class): parity of the reference with scikit-image and the
properties the chapter does not check on real tiles (its other checks are in nbs/01_hog.ipynb)."""

import numpy as np
import pytest
import torch
from skimage.feature import _hoghistogram
from skimage.feature import hog as sk_hog
from skimage.feature._hog import _hog_channel_gradient

from mimeo_nb.data import find_data, read_tile
from mimeo_nb.hog import hog, hog_reference, image_gradients


@pytest.fixture(scope="session")
def tiles_dn():
    "Two real tiles per class (20 x 13 bands, 64 x 64), uint16 digital numbers, canonical band order."
    root = find_data(required=True) / "eurosat-ms-sample"
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(classes) == 10, classes
    files = [f for c in classes for f in sorted(c.glob("*.tif"))[:2]]
    return np.stack([read_tile(f)[0] for f in files])


@pytest.fixture(scope="session")
def tiles(tiles_dn):
    "The same tiles as float64 reflectance (digital numbers / 10000), the study's input scaling."
    return torch.from_numpy(tiles_dn.astype(np.float64)) / 10000


def sk_normalised(band):
    return sk_hog(
        band, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(1, 1), block_norm="L2", feature_vector=False
    )[:, :, 0, 0]


def sk_raw(band):
    g_row, g_col = _hog_channel_gradient(band)
    out = np.zeros((8, 8, 9))
    _hoghistogram.hog_histograms(g_col, g_row, 8, 8, 64, 64, 8, 8, 9, out)
    return out


# ---------------------------------------------------------------- parity


def test_hog_reference_is_scikit_image(tiles):
    sub = tiles[:2, :3].numpy()
    np.testing.assert_array_equal(hog_reference(sub)[1, 2], sk_normalised(sub[1, 2]))
    np.testing.assert_array_equal(hog_reference(sub, normalize=False)[0, 1], sk_raw(sub[0, 1]))


# ---------------------------------------------------------------- gradients, binning, normalisation


def test_sobel_votes_sum_to_mean_magnitude(tiles):
    sob = hog(tiles, normalize=False, gradient="sobel")
    torch.testing.assert_close(
        sob.sum(-1),
        torch.hypot(*image_gradients(tiles, "sobel")).view(20, 13, 8, 8, 8, 8).mean((3, 5)),
        rtol=0,
        atol=1e-12,
    )


def test_normalisation_formula(tiles):
    raw, normed = hog(tiles, normalize=False), hog(tiles)
    torch.testing.assert_close(normed, raw / torch.sqrt((raw**2).sum(-1, keepdim=True) + 1e-10), rtol=0, atol=1e-12)
    normed_eps = hog(tiles, eps=1e-2)
    torch.testing.assert_close(normed_eps, raw / torch.sqrt((raw**2).sum(-1, keepdim=True) + 1e-4), rtol=0, atol=1e-12)


def test_deterministic_and_chunk_independent(tiles):
    a = hog(tiles.float())
    assert torch.equal(a, hog(tiles.float()))
    torch.testing.assert_close(hog(tiles, binning="linear", chunk=3), hog(tiles, binning="linear"), rtol=0, atol=1e-12)


def test_non_contiguous(tiles):
    x = tiles[:4].permute(0, 1, 3, 2)  # a non-contiguous view: the HOG of the transposed image
    assert not x.is_contiguous()
    torch.testing.assert_close(hog(x), hog(x.contiguous()), rtol=0, atol=0)

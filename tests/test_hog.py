"""Batched torch HOG (mimeo_nb.hog): parity with scikit-image on real EuroSAT tiles, shapes on the ViT patch grids, bad inputs."""

import math

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.feature import hog as sk_hog
from skimage.feature import _hoghistogram
from skimage.feature._hog import _hog_channel_gradient

from mimeo_nb.data import find_data, read_tile
from mimeo_nb.hog import (
    HOG,
    cells_to_patches,
    check_hog_options,
    gaussian_window_weights,
    hog,
    hog_reference,
    image_gradients,
    plot_hog_explained,
)


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
def test_parity_normalised_every_band(tiles):
    got = hog(tiles)  # [20, 13, 8, 8, 9] float64
    assert got.shape == (20, 13, 8, 8, 9) and got.dtype == torch.float64
    ref = np.stack([[sk_normalised(tiles[i, c].numpy()) for c in range(13)] for i in range(len(tiles))])
    err = np.abs(got.numpy() - ref).max()
    assert err < 1e-5, err
    assert np.abs(ref).max() > 0.5  # real, textured histograms, not zeros


def test_parity_raw_every_band(tiles):
    got = hog(tiles, normalize=False)
    ref = np.stack([[sk_raw(tiles[i, c].numpy()) for c in range(13)] for i in range(len(tiles))])
    err = np.abs(got.numpy() - ref).max()
    assert err < 1e-5, err
    assert ref.max() > 1e-2
    # scikit-image normalises exactly these histograms: un-normalising its HOG gives them back where cells have texture
    norm = np.sqrt((ref**2).sum(-1, keepdims=True) + 1e-10)
    assert np.abs(hog(tiles).numpy() * norm - ref).max() < 1e-5


def test_parity_on_digital_numbers(tiles_dn):
    x = torch.from_numpy(tiles_dn[:4].astype(np.float64))
    ref = np.stack([[sk_normalised(x[i, c].numpy()) for c in range(13)] for i in range(4)])
    assert np.abs(hog(x).numpy() - ref).max() < 1e-5
    raw = np.stack([[sk_raw(x[i, c].numpy()) for c in range(13)] for i in range(4)])
    # scikit-image sums cells in float32: relative 1e-6 on histograms of digital numbers (values up to ~1e3)
    assert np.abs(hog(x, normalize=False).numpy() - raw).max() < 1e-6 * raw.max()


def test_hog_reference_is_scikit_image(tiles):
    sub = tiles[:2, :3].numpy()
    np.testing.assert_array_equal(hog_reference(sub)[1, 2], sk_normalised(sub[1, 2]))
    np.testing.assert_array_equal(hog_reference(sub, normalize=False)[0, 1], sk_raw(sub[0, 1]))


def test_float32_close_to_float64(tiles):
    a, b = hog(tiles.float()), hog(tiles)
    assert a.dtype == torch.float32
    d = (a.double() - b).abs()
    # float32 rounding can move a vote that sits on a bin edge into the neighbouring bin: rare, and bounded
    assert (d > 1e-5).double().mean() < 1e-3 and d.max() < 0.2, (d.max(), (d > 1e-5).double().mean())
    assert torch.quantile(d.flatten()[:1_000_000], 0.999) < 1e-5


# ---------------------------------------------------------------- gradients, binning, weighting
def test_gradients_match_scikit_image_and_maskfeat(tiles):
    g_row, g_col = image_gradients(tiles[:3])
    for i in range(3):
        for c in (0, 7, 12):
            r, cc = _hog_channel_gradient(tiles[i, c].numpy())
            np.testing.assert_array_equal(g_row[i, c].numpy(), r)
            np.testing.assert_array_equal(g_col[i, c].numpy(), cc)
    wx = (
        torch.outer(torch.tensor([1.0, 2, 1]), torch.tensor([1.0, 0, -1])).double().view(1, 1, 3, 3)
    )  # Sobel: smoothing x difference
    xp = F.pad(tiles[:3], (1, 1, 1, 1), mode="reflect").reshape(-1, 1, 66, 66)
    s_row, s_col = image_gradients(tiles[:3], "sobel")
    torch.testing.assert_close(s_col.reshape(-1, 1, 64, 64), -F.conv2d(xp, wx), rtol=0, atol=1e-12)
    torch.testing.assert_close(s_row.reshape(-1, 1, 64, 64), -F.conv2d(xp, wx.transpose(2, 3)), rtol=0, atol=1e-12)


def ramp(deg, size=32):
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    a = math.radians(deg)
    return (yy * math.sin(a) + xx * math.cos(a))[None, None]


@pytest.mark.parametrize(
    "deg,hard_bin,linear",
    [
        (5, 0, {8: 0.25, 0: 0.75}),
        (30, 1, {1: 1.0}),
        (45, 2, {1: 0.25, 2: 0.75}),
        (90, 4, {4: 1.0}),
        (110, 5, {5: 1.0}),
        (175, 8, {8: 0.75, 0: 0.25}),
        (-30, 7, {7: 1.0}),
    ],
)
def test_binning(deg, hard_bin, linear):
    h = hog(ramp(deg), normalize=False)[0, 0, 1:3, 1:3]  # interior cells: every pixel has the same gradient, |g| = 2
    expect = torch.zeros(9, dtype=torch.float64)
    expect[hard_bin] = 2
    torch.testing.assert_close(h, expect.expand_as(h), rtol=0, atol=1e-9)
    hl = hog(ramp(deg), normalize=False, binning="linear")[0, 0, 1:3, 1:3]
    expect = torch.tensor([2 * linear.get(k, 0.0) for k in range(9)], dtype=torch.float64)
    torch.testing.assert_close(hl, expect.expand_as(hl), rtol=0, atol=1e-9)


def test_votes_sum_to_mean_magnitude(tiles):
    mean_mag = torch.hypot(*image_gradients(tiles)).view(20, 13, 8, 8, 8, 8).mean((3, 5))
    for binning in ("hard", "linear"):
        torch.testing.assert_close(hog(tiles, normalize=False, binning=binning).sum(-1), mean_mag, rtol=0, atol=1e-12)
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


def test_gaussian_window():
    w = gaussian_window_weights(16, 32, 32, torch.float64)
    assert abs(w[:16, :16].sum().item() - 1) < 1e-12 and torch.equal(w[:16, :16], w[16:, 16:])
    n = torch.arange(16, dtype=torch.float64)  # MaskFeat's get_gkern(16, 8)
    g = torch.exp(-0.5 * ((n - n.mean()) / 8) ** 2)
    k = g[:, None] * g[None, :]
    torch.testing.assert_close(w[:16, :16], k / k.sum())
    h = hog(ramp(30), normalize=False, gaussian_window=16)[0, 0]
    assert abs(h[1, 1, 1].item() - 2 * w[8:16, 8:16].mean().item()) < 1e-12
    assert h[1, 1].argmax().item() == 1


def test_deterministic_and_chunk_independent(tiles):
    a = hog(tiles.float())
    assert torch.equal(a, hog(tiles.float()))
    torch.testing.assert_close(hog(tiles, chunk=1), hog(tiles, chunk=10_000), rtol=0, atol=1e-12)
    torch.testing.assert_close(hog(tiles, binning="linear", chunk=3), hog(tiles, binning="linear"), rtol=0, atol=1e-12)
    assert torch.equal(HOG()(tiles), hog(tiles))


def test_dtypes_and_non_contiguous(tiles):
    assert hog(tiles[:2].to(torch.bfloat16)).dtype == torch.bfloat16
    x = tiles[:4].permute(0, 1, 3, 2)  # a non-contiguous view: the HOG of the transposed image
    assert not x.is_contiguous()
    torch.testing.assert_close(hog(x), hog(x.contiguous()), rtol=0, atol=0)


# ---------------------------------------------------------------- the patch grid
@pytest.mark.parametrize("size,patch", [(64, 8), (64, 16), (224, 16), (96, 32)])
def test_patch_grid_shapes_and_order(size, patch):
    k, C = patch // 8, 13
    t = HOG().patches(torch.rand(2, C, size, size), patch)
    assert t.shape == (2, (size // patch) ** 2, C * k * k * 9)
    # encode (band, cell row, cell col, bin) in every entry and check where cells_to_patches puts it
    Hc = size // 8
    code = (
        100_000 * torch.arange(C).view(C, 1, 1, 1)
        + 1000 * torch.arange(Hc).view(1, Hc, 1, 1)
        + 10 * torch.arange(Hc).view(1, 1, Hc, 1)
        + torch.arange(9).view(1, 1, 1, 9)
    ).double()[None]
    got = cells_to_patches(code, patch, 8)[0]
    for l in range(got.shape[0]):
        r0, s0 = (
            (l // (size // patch)) * k,
            (l % (size // patch)) * k,
        )  # patches numbered row by row (MAE, timm PatchEmbed)
        expect = [
            c * 100_000 + (r0 + r) * 1000 + (s0 + s) * 10 + o
            for c in range(C)
            for r in range(k)
            for s in range(k)
            for o in range(9)
        ]
        assert got[l].tolist() == expect


def test_patch_grid_of_a_real_tile(tiles):
    t = HOG().patches(tiles.float(), 16)
    h = hog(tiles.float())
    assert t.shape == (20, 16, 13 * 4 * 9)
    torch.testing.assert_close(t[3, 5].view(13, 2, 2, 9), h[3, :, 2:4, 2:4])  # patch 5 = row 1, col 1


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda x: hog(x, cell=7), "cell=7 does not divide the image (64x64 px)"),
        (lambda x: hog(x, cell=0), "cell=0"),
        (lambda x: hog(x, bins=0), "bins=0"),
        (lambda x: hog(x, bins=-3), "bins=-3"),
        (lambda x: hog(x, bins=2.5), "bins=2.5"),
        (lambda x: hog(x[0]), "4-D tensor [B, C, H, W]; got shape (13, 64, 64)"),
        (lambda x: hog(x[None]), "4-D"),
        (lambda x: hog((x * 10000).to(torch.int32)), "floating-point tensor"),
        (lambda x: hog(x.numpy()), "torch.Tensor"),
        (lambda x: hog(x, gradient="prewitt"), "gradient='prewitt'; allowed"),
        (lambda x: hog(x, binning="soft"), "binning='soft'; allowed"),
        (lambda x: hog(x, gaussian_window=12), "gaussian_window=12 does not divide"),
        (lambda x: hog(x, chunk=0), "chunk=0"),
        (lambda x: HOG(bins=0), "bins=0"),
        (lambda x: cells_to_patches(hog(x), 12, 8), "cell=8 does not divide patch=12"),
        (lambda x: cells_to_patches(hog(x), 48, 8), "patch=48 does not divide the image (64x64 px"),
        (lambda x: cells_to_patches(hog(x)[0], 16, 8), "5-D"),
        (lambda x: image_gradients(x, "roberts"), "gradient='roberts'"),
        (lambda x: plot_hog_explained(np.zeros((4, 8, 8))), "tile must be"),
    ],
)
def test_bad_inputs(tiles, call, message):
    with pytest.raises(ValueError, match=None) as e:
        call(tiles[:2])
    assert message in str(e.value), str(e.value)


def test_check_hog_options_accepts_defaults():
    check_hog_options()
    with pytest.raises(ValueError, match="eps=-1"):
        check_hog_options(eps=-1)


# ---------------------------------------------------------------- figure and bench
def test_plot_hog_explained(tiles):
    import matplotlib.figure

    fig = plot_hog_explained(tiles[0, 7].numpy())
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 5
    assert len(fig.axes[4].collections[0].get_segments()) == 8 * 8 * 9
    rgb = np.clip(tiles[0, [3, 2, 1]].permute(1, 2, 0).numpy() * 4, 0, 1)
    assert len(plot_hog_explained(rgb, gradient="sobel").axes) == 5

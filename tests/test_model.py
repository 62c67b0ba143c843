"""The masked autoencoder: shapes per preset x target, variant statistics, learning, export to timm, bad input."""

import logging

import numpy as np
import pytest
import torch

from mimeo_nb.data import BandNormalize, load_eurosat
from mimeo_nb.hog import cells_to_patches
from mimeo_nb.model import PRESETS, MaskedAutoencoder, plot_reconstruction

logging.getLogger("timm").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def real16(ms_sample, tmp_path_factory):
    ds = load_eurosat(ms_sample, cache_dir=tmp_path_factory.mktemp("c"), progress=False)
    idx = np.concatenate([np.flatnonzero(ds.labels == k)[:2] for k in range(10)])[:16]  # every class
    return BandNormalize("scale")(torch.from_numpy(np.asarray(ds.images[idx])))


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("target,variant", [("raw", "A"), ("hog", "C"), ("raw+hog", "BD")])
def test_shapes(preset, target, variant):
    torch.manual_seed(0)
    m = MaskedAutoencoder(preset, target, variant, mask_ratio=0.75)
    S, P = m.img_size, m.patch_size
    L = (S // P) ** 2
    out = m(torch.randn(2, 13, S, S))
    assert out["mask"].shape == (2, L) and (out["mask"].sum(1) == L - int(L * 0.25)).all()
    assert out["ids_restore"].shape == (2, L)
    for k in out["pred"]:
        assert out["pred"][k].shape == out["target"][k].shape
    if "raw" in target:
        assert out["pred"]["raw"].shape == (2, L, P * P * 13)
    if "hog" in target:
        assert out["pred"]["hog"].shape == (2, L, 13 * (P // 8) ** 2 * 9)
    assert set(out["losses"]) == set(target.split("+"))


def test_other_band_counts_and_sizes():
    m = MaskedAutoencoder("vit_tiny_patch8_64", "hog", "C", in_chans=3)
    assert m(torch.rand(2, 3, 64, 64))["pred"]["hog"].shape == (2, 64, 27)
    m = MaskedAutoencoder("vit_tiny_patch8_64", "raw+hog", "AC", img_size=96, patch_size=16)
    out = m(torch.rand(1, 13, 96, 96))
    assert out["pred"]["raw"].shape == (1, 36, 16 * 16 * 13) and out["pred"]["hog"].shape == (1, 36, 13 * 4 * 9)


def test_variant_statistics(real16):
    x = real16
    t = MaskedAutoencoder(target="raw", variant="A").targets(x)["raw"]
    torch.testing.assert_close(t.mean(-1), torch.zeros(t.shape[:2]), atol=1e-4, rtol=0)
    torch.testing.assert_close(t.var(-1), torch.ones(t.shape[:2]), atol=2e-3, rtol=0)
    mB = MaskedAutoencoder(target="raw", variant="B")
    assert torch.equal(mB.targets(x)["raw"], mB.patchify(x))
    for v, standardised, unit_cells in (("C", True, True), ("D", False, True), ("E", True, False), ("F", False, False)):
        m = MaskedAutoencoder(target="hog", variant=v)
        t = m.targets(x)["hog"]
        raw = cells_to_patches(m.hog(x), 8, 8)
        norms = raw.reshape(16, 64, 13, 9).norm(dim=-1)
        if unit_cells:
            assert (norms <= 1 + 1e-5).all() and (norms > 0.9).float().mean() > 0.95
        else:
            assert not torch.allclose(norms, torch.ones_like(norms), atol=0.1)
        if standardised:  # every patch: mean 0, variance v / (v + 1e-6) (MAE's epsilon), i.e. 1 for unit-norm cells
            v = raw.var(-1)
            assert t.mean(-1).abs().max() < 1e-4
            torch.testing.assert_close(t.var(-1), v / (v + 1e-6), atol=1e-3, rtol=1e-3)
            if unit_cells:
                assert (t.var(-1) - 1).abs().max() < 0.02
        else:
            assert torch.equal(t, raw)
    # cell-normalised HOG ignores a band's brightness and contrast; raw HOG scales with contrast
    D, F = MaskedAutoencoder(target="hog", variant="D"), MaskedAutoencoder(target="hog", variant="F")
    x2 = x * 4 + 0.25
    assert (D.targets(x2)["hog"] - D.targets(x)["hog"]).abs().mean() < 1e-3
    f1, f2 = F.targets(x)["hog"].reshape(16, 64, 13, 9), F.targets(x2)["hog"].reshape(16, 64, 13, 9)
    torch.testing.assert_close(
        f2.sum(-1), 4 * f1.sum(-1), atol=1e-5, rtol=1e-4
    )  # a cell's total vote scales with contrast
    assert ((f2 - 4 * f1).abs() > 1e-3).float().mean() < 0.01  # and the bins agree but for votes on a bin edge


def test_masked_loss_only_counts_masked_patches():
    torch.manual_seed(0)
    m = MaskedAutoencoder(target="raw", variant="B")
    x = torch.rand(2, 13, 64, 64)
    out = m(x)
    per_patch = ((out["pred"]["raw"] - out["target"]["raw"]) ** 2).mean(-1)
    torch.testing.assert_close(out["losses"]["raw"], per_patch[out["mask"].bool()].mean())
    m.loss_on = "all"
    out = m(x, noise=torch.rand(2, 64))
    torch.testing.assert_close(out["losses"]["raw"], ((out["pred"]["raw"] - out["target"]["raw"]) ** 2).mean())


def test_reconstruction_figure(real16):
    import matplotlib

    matplotlib.use("Agg")
    for target, variant in (("raw", "A"), ("hog", "C")):
        fig = plot_reconstruction(MaskedAutoencoder(target=target, variant=variant), real16[:2])
        assert len(fig.axes) == (8 if target == "raw" else 8)
        assert "true patch statistics" in fig._suptitle.get_text()  # A and C predict per-patch normalised targets


@pytest.mark.parametrize(
    "kwargs,expect", [(dict(mask_ratio=1.0), "mask_ratio=1.0"), (dict(loss_on="visible"), "loss_on='visible'")]
)
def test_bad_construction(kwargs, expect):
    with pytest.raises(ValueError, match=expect.replace("(", r"\(").replace("[", r"\[")):
        MaskedAutoencoder(**kwargs)


def test_bad_input_bands():
    with pytest.raises(ValueError, match="in_chans=13"):
        MaskedAutoencoder()(torch.rand(1, 12, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, 13, 64, 64\]"):
        MaskedAutoencoder()(torch.rand(1, 13, 32, 32))

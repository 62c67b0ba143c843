"""Per-sample masking (mimeo_nb.masking) on real EuroSAT patch tokens: ties in the noise and the masks figure of a band (its other
checks are in nbs/02_masking.ipynb)."""

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from mimeo_nb.data import find_data, read_tile
from mimeo_nb.masking import plot_masks, random_masking


@pytest.fixture(scope="session")
def tokens():
    "Real EuroSAT tiles (one per class) cut into MAE patch tokens: [10, 64, 8 * 8 * 13] (64 px, patch 8)."
    root = find_data(required=True) / "eurosat-ms-sample"
    files = [min(c.glob("*.tif")) for c in sorted(p for p in root.iterdir() if p.is_dir())]
    x = torch.from_numpy(np.stack([read_tile(f)[0] for f in files]).astype(np.float32)) / 10000
    N, C, H, W = x.shape
    p = 8  # [N, C, h, w, p, p] -> patches in row-major order, pixels (row, col, band)
    return x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 4, 5, 1).reshape(N, (H // p) * (W // p), p * p * C)


def test_ties_in_noise_are_deterministic(tokens):
    noise = torch.zeros(10, 64)  # all tied: stable sort keeps patch order
    kept, mask, _ = random_masking(tokens, 0.5, noise=noise)
    assert torch.equal(mask, torch.cat([torch.zeros(10, 32), torch.ones(10, 32)], 1))
    assert torch.equal(kept, tokens[:, :32])


def test_plot_masks_of_one_band(tokens):
    import matplotlib.figure

    img = tokens[2].reshape(8, 8, 8, 8, 13)[..., [3, 2, 1]].permute(0, 2, 1, 3, 4).reshape(64, 64, 3).numpy()
    img = np.clip(img * 4, 0, 1)
    fig = plot_masks(img[..., 0], ratios=(0.5,), patch=16, methods=("block",))
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2

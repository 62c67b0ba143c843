"""Per-sample masking (mimeo_nb.masking): MAE's specification, exact counts, determinism, keyed noise for resume / DDP, block-wise masks, bad inputs."""

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from mimeo_nb.data import find_data, read_tile
from mimeo_nb.masking import block_masking, keyed_uniform, plot_masks, random_masking, splitmix64

M64, GOLDEN = (1 << 64) - 1, 0x9E3779B97F4A7C15


@pytest.fixture(scope="session")
def tokens():
    "Real EuroSAT tiles (one per class) cut into MAE patch tokens: [10, 64, 8 * 8 * 13] (64 px, patch 8)."
    root = find_data(required=True) / "eurosat-ms-sample"
    files = [sorted(c.glob("*.tif"))[0] for c in sorted(p for p in root.iterdir() if p.is_dir())]
    x = torch.from_numpy(np.stack([read_tile(f)[0] for f in files]).astype(np.float32)) / 10000
    N, C, H, W = x.shape
    p = 8  # [N, C, h, w, p, p] -> patches in row-major order, pixels (row, col, band)
    return x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 4, 5, 1).reshape(N, (H // p) * (W // p), p * p * C)


# ---------------------------------------------------------------- counts


def test_ties_in_noise_are_deterministic(tokens):
    noise = torch.zeros(10, 64)  # all tied: stable sort keeps patch order
    kept, mask, _ = random_masking(tokens, 0.5, noise=noise)
    assert torch.equal(mask, torch.cat([torch.zeros(10, 32), torch.ones(10, 32)], 1))
    assert torch.equal(kept, tokens[:, :32])


# ---------------------------------------------------------------- keyed noise
def splitmix_reference(seed, epoch, stream, i, n):
    key = splitmix64(splitmix64(splitmix64(seed & M64) ^ (epoch & M64)) ^ (stream & M64))
    state = splitmix64((i * GOLDEN + key - GOLDEN) & M64)
    return [(splitmix64((state + j * GOLDEN) & M64) >> 40) / 2**24 for j in range(n)]


# ---------------------------------------------------------------- block-wise
def test_block_masks_are_whole_squares_but_one():
    x = torch.zeros(32, 64, 1)
    u = torch.rand(32, 66, generator=torch.Generator().manual_seed(0))
    for ratio in (0.3, 0.5, 0.7):
        mask = block_masking(x, ratio, noise=u)[1].view(32, 8, 8)
        off = (u[:, 64:] * 2).long()
        for b in range(32):
            frame = torch.full((10, 10), -1.0)
            frame[off[b, 0] : off[b, 0] + 8, off[b, 1] : off[b, 1] + 8] = mask[b]
            squares = frame.view(5, 2, 5, 2).permute(0, 2, 1, 3).reshape(25, 4)
            partly = sum(int(s[s >= 0].min() != s[s >= 0].max()) for s in squares if (s >= 0).any())
            assert partly <= 1, (ratio, b)
    # block=1 is plain random masking by the first L noise values
    assert torch.equal(block_masking(x, 0.5, block=1, noise=u)[1], random_masking(x, 0.5, noise=u[:, :64])[1])


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "call,message", [(lambda x: keyed_uniform(0, 0, torch.arange(3), 2, dtype=torch.float16), "dtype=torch.float16")]
)
def test_bad_inputs(tokens, call, message):
    with pytest.raises(ValueError) as e:
        call(tokens)
    assert message in str(e.value), str(e.value)


def test_plot_masks(tokens):
    import matplotlib.figure

    img = tokens[2].reshape(8, 8, 8, 8, 13)[..., [3, 2, 1]].permute(0, 2, 1, 3, 4).reshape(64, 64, 3).numpy()
    img = np.clip(img * 4, 0, 1)
    fig = plot_masks(img)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 8
    assert [a.get_title() for a in fig.axes[1:4]] == [
        "ratio 0.2: 13/64 masked",
        "ratio 0.5: 32/64 masked",
        "ratio 0.7: 45/64 masked",
    ]
    assert len(plot_masks(img[..., 0], ratios=(0.5,), patch=16, methods=("block",)).axes) == 2
    with pytest.raises(ValueError, match="patch=7 does not divide"):
        plot_masks(img, patch=7)

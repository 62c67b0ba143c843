"""Per-sample masking (mimeo_nb.masking): MAE's specification, exact counts, determinism, keyed noise for resume / DDP, block-wise masks, bad inputs."""

import math

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from mimeo_nb.data import find_data, read_tile
from mimeo_nb.masking import (
    block_masking,
    keyed_uniform,
    num_visible,
    plot_masks,
    random_masking,
    splitmix64,
)

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
@pytest.mark.parametrize(
    "L,ratio,keep",
    [
        (64, 0.2, 51),
        (64, 0.5, 32),
        (64, 0.7, 19),
        (64, 0.75, 16),
        (16, 0.7, 4),
        (196, 0.75, 49),
        (196, 0.7, 58),
        (196, 0.2, 156),
        (4, 0.5, 2),
        (3, 0.5, 1),
    ],
)
def test_num_visible_is_maes_rounding(L, ratio, keep):
    assert num_visible(L, ratio) == keep == int(L * (1 - ratio))


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.7, 0.9])
def test_exact_count_in_every_sample(tokens, ratio):
    kept, mask, ids_restore = random_masking(tokens, ratio, generator=torch.Generator().manual_seed(1))
    keep = num_visible(64, ratio)
    assert kept.shape == (10, keep, tokens.shape[-1])
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(mask.sum(1), torch.full((10,), float(64 - keep)))
    bm = block_masking(tokens, ratio, generator=torch.Generator().manual_seed(1))[1]
    assert torch.equal(bm.sum(1), torch.full((10,), float(64 - keep)))


def test_keeps_the_least_noisy_patches_and_restores_real_patches(tokens):
    "MAE's specification: per sample the L_keep patches of least noise are kept, in that order; the mask is 1 on the others."
    noise = torch.rand(10, 64, generator=torch.Generator().manual_seed(0))
    kept, mask, ids_restore = random_masking(tokens, 0.7, noise=noise)
    order = [sorted(range(64), key=lambda l: noise[n, l].item()) for n in range(10)]
    assert torch.equal(kept, torch.stack([tokens[n, order[n][:19]] for n in range(10)]))
    assert torch.equal(mask, torch.tensor([[float(l not in order[n][:19]) for l in range(64)] for n in range(10)]))
    # the kept tokens are the visible patches of each tile, in MAE's decoder order
    full = torch.cat([kept, torch.zeros(10, 64 - kept.shape[1], tokens.shape[-1])], 1)
    restored = torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, tokens.shape[-1]))
    assert torch.equal(restored[mask == 0], tokens[mask == 0])
    assert restored[mask == 1].abs().sum() == 0
    assert torch.equal(torch.sort(ids_restore, 1).values, torch.arange(64).expand(10, 64))  # a permutation per sample


def test_generator_determinism(tokens):
    g = lambda s: torch.Generator().manual_seed(s)
    a, b = random_masking(tokens, 0.7, g(3)), random_masking(tokens, 0.7, g(3))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a[1], random_masking(tokens, 0.7, g(4))[1])
    assert len({tuple(m.tolist()) for m in a[1]}) == 10  # per-sample masks
    assert torch.equal(block_masking(tokens, 0.5, generator=g(3))[1], block_masking(tokens, 0.5, generator=g(3))[1])


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


def test_splitmix64_known_sequence():
    s, out = 1234567, []
    for _ in range(3):
        out.append(splitmix64(s))
        s = (s + GOLDEN) & M64
    assert out == [6457827717110365317, 3203168211198807973, 9817491932198370423]


def test_keyed_uniform_bit_exact():
    ids = torch.tensor([0, 3, 99_999, 2**50 + 7, -1])
    u = keyed_uniform(7, 2, ids, 33, stream=5)
    assert u.shape == (5, 33) and u.dtype == torch.float32
    for b, i in enumerate(ids.tolist()):
        assert u[b].tolist() == splitmix_reference(7, 2, 5, i, 33)


def test_keyed_uniform_independent_of_batch_composition():
    whole = keyed_uniform(11, 4, torch.arange(100), 64)
    for ids in (torch.tensor([42]), torch.tensor([99, 0, 42]), torch.randperm(100)[:37], torch.arange(100).flip(0)):
        assert torch.equal(keyed_uniform(11, 4, ids, 64), whole[ids])
    assert torch.equal(keyed_uniform(11, 4, torch.arange(100), 10), whole[:, :10])  # prefix-stable in n
    for other in (
        keyed_uniform(12, 4, torch.arange(100), 64),
        keyed_uniform(11, 5, torch.arange(100), 64),
        keyed_uniform(11, 4, torch.arange(100), 64, stream=1),
    ):
        assert (other == whole).float().mean() < 0.01


def test_keyed_uniform_distribution():
    u = keyed_uniform(0, 0, torch.arange(4000), 100).double().flatten()
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.001
    counts = torch.histc(u, 50, 0, 1)
    chi2 = ((counts - len(u) / 50) ** 2 / (len(u) / 50)).sum().item()
    assert chi2 < 120, chi2  # 49 dof: p ~ 1e-7 for a fair generator
    rows = keyed_uniform(0, 0, torch.arange(2), 100_000).double()
    assert abs(torch.corrcoef(rows)[0, 1]) < 0.02  # neighbouring samples uncorrelated
    d = keyed_uniform(0, 0, torch.arange(3), 8, dtype=torch.float64)
    assert d.dtype == torch.float64 and (d.float() - keyed_uniform(0, 0, torch.arange(3), 8)).abs().max() < 2**-23


def test_keyed_masks_same_for_single_process_ddp_and_resume(tokens):
    seed, epoch, L = 3, 7, 64
    single = random_masking(tokens, 0.7, noise=keyed_uniform(seed, epoch, torch.arange(10), L))[1]
    for world in (2, 3):  # DistributedSampler deals indices round-robin
        for rank in range(world):
            ids = torch.arange(rank, 10, world)
            assert torch.equal(
                random_masking(tokens[ids], 0.7, noise=keyed_uniform(seed, epoch, ids, L))[1], single[ids]
            )
    perm = torch.tensor([9, 1, 4])  # a resumed run batching the same samples differently
    assert torch.equal(random_masking(tokens[perm], 0.7, noise=keyed_uniform(seed, epoch, perm, L))[1], single[perm])
    blk = block_masking(tokens, 0.5, noise=keyed_uniform(seed, epoch, torch.arange(10), L + 2))[1]
    ids = torch.tensor([8, 2])
    assert torch.equal(block_masking(tokens[ids], 0.5, noise=keyed_uniform(seed, epoch, ids, L + 2))[1], blk[ids])


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


def test_block_masking_non_square_grid():
    x = torch.zeros(4, 6 * 10, 2)
    m = block_masking(x, 0.6, grid=(6, 10), block=3, generator=torch.Generator().manual_seed(0))[1]
    assert torch.equal(m.sum(1), torch.full((4,), 60.0 - num_visible(60, 0.6)))


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda x: num_visible(64, 1.0), "ratio=1.0; allowed: a number in (0, 1)"),
        (lambda x: num_visible(64, 0.0), "ratio=0.0; allowed: a number in (0, 1)"),
        (lambda x: num_visible(64, 1.5), "ratio=1.5; allowed: a number in (0, 1)"),
        (lambda x: num_visible(64, -0.1), "ratio=-0.1; allowed: a number in (0, 1)"),
        (lambda x: num_visible(64, math.inf), "allowed: a number in (0, 1)"),
        (lambda x: num_visible(64, "0.5"), "ratio='0.5'; allowed: a number in (0, 1)"),
        (lambda x: num_visible(10, 0.9), "ratio=0.9 leaves no visible patch of L=10"),
        (lambda x: num_visible(64, 0.99), "about ratio <= 0.984375"),
        (lambda x: random_masking(x, 0.99), "leaves no visible patch of L=64"),
        (lambda x: random_masking(x, 1.0), "ratio=1.0; allowed: a number in (0, 1)"),
        (lambda x: random_masking(x[0], 0.5), "3-D token tensor [B, L, D]"),
        (lambda x: random_masking(x, 0.5, noise=torch.rand(10, 60)), "noise must be a tensor of shape [10, 64]"),
        (lambda x: block_masking(x, 0.5, noise=torch.rand(10, 64)), "[10, 66]"),
        (lambda x: block_masking(x, 0.5, block=0), "block=0"),
        (lambda x: block_masking(x, 0.5, grid=(4, 8)), "grid=(4, 8) does not hold L=64"),
        (lambda x: block_masking(x[:, :60], 0.5), "needs a square number of patches; got L=60"),
        (lambda x: block_masking(x, 1.0), "ratio=1.0"),
        (lambda x: keyed_uniform(0, 0, torch.tensor([[0, 1]]), 4), "1-D integer tensor"),
        (lambda x: keyed_uniform(0, 0, torch.tensor([0.0]), 4), "1-D integer tensor"),
        (lambda x: keyed_uniform(0, 0, torch.arange(3), -2), "n=-2"),
        (lambda x: keyed_uniform(0, 1.5, torch.arange(3), 2), "epoch=1.5"),
        (lambda x: keyed_uniform(0, 0, torch.arange(3), 2, dtype=torch.float16), "dtype=torch.float16"),
    ],
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

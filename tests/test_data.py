"""The data layer on generated fixtures (bad inputs, cache, layouts) and on the real samples in ../shared/data."""

import shutil

import numpy as np
import pytest
import torch

from mimeo_nb.data import (
    BAND_NAMES,
    EUROSAT_FILE_ORDER,
    BandNormalize,
    band_stats,
    label_fraction,
    load_eurosat,
    load_ssl4eo,
    split_indices,
    spatial_split,
)
from conftest import write_tif


# ---- the real samples -------------------------------------------------------------------------------------------
def test_real_ms_sample(ms_sample, tmp_path):
    ds = load_eurosat(ms_sample, cache_dir=tmp_path, progress=False)
    assert ds.images.shape == (419, 13, 64, 64) and ds.images.dtype == np.uint16
    assert len(ds.classes) == 10 and ds.classes == sorted(ds.classes)
    assert ds.band_names.index("B8A") == 8 and not ds.from_cache
    assert ds.class_counts() == {
        "AnnualCrop": 45,
        "Forest": 45,
        "HerbaceousVegetation": 45,
        "Highway": 39,
        "Industrial": 40,
        "Pasture": 35,
        "PermanentCrop": 40,
        "Residential": 45,
        "River": 40,
        "SeaLake": 45,
    }
    again = load_eurosat(ms_sample, cache_dir=tmp_path, progress=False)
    assert again.from_cache and isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, ds.images)
    assert again.paths == ds.paths and again.crs == ds.crs
    assert all(c.startswith("EPSG:326") for c in ds.crs)  # UTM north
    lon, lat = ds.lonlat.T
    assert (lon > -15).all() and (lon < 45).all() and (lat > 30).all() and (lat < 72).all()


def test_real_rgb_layout(data_root, tmp_path):
    src = data_root / "eurosat-rgb"
    root = tmp_path / "rgb"
    for c in ("Forest", "River"):
        (root / c).mkdir(parents=True)
        for f in sorted((src / c).iterdir())[:5]:
            shutil.copy(f, root / c / f.name)
    ds = load_eurosat(root, cache_dir=False, progress=False)
    assert ds.images.shape == (10, 3, 64, 64) and ds.images.dtype == np.uint8
    assert ds.band_names == ("B04", "B03", "B02") and ds.scale == 255.0
    assert np.isnan(ds.lonlat).all() and ds.crs == [""] * 10
    from PIL import Image

    np.testing.assert_array_equal(ds.images[0], np.asarray(Image.open(root / ds.paths[0])).transpose(2, 0, 1))


def test_real_ssl4eo(data_root):
    s = load_ssl4eo(data_root / "ssl4eo-s12-sample", size=64)
    assert len(s) == 2
    x = s[1]
    assert x.shape == (13, 64, 64) and x.dtype == torch.uint16
    full = s.read_scene(s.scenes[1][0])
    assert full.shape == (13, 264, 264)
    import rasterio

    with rasterio.open(s.scenes[1][0] / "B8A.tif") as src:
        assert (src.height, src.width) == (132, 132)
    with rasterio.open(s.scenes[1][0] / "B4.tif") as src:
        np.testing.assert_array_equal(full[3], src.read(1))  # 10 m band untouched
    assert torch.equal(s[1], x)  # same (seed, epoch, index), same crop


# ---- band order ---------------------------------------------------------------------------------------------------
def test_band_reorder(tiny_eurosat):
    a = write_tif(tiny_eurosat / "Forest" / "Forest_9.tif", seed=99)
    ds = load_eurosat(tiny_eurosat, cache_dir=False, progress=False)
    i = ds.paths.index("Forest/Forest_9.tif")
    for c, name in enumerate(BAND_NAMES):
        np.testing.assert_array_equal(ds.images[i, c], a[EUROSAT_FILE_ORDER.index(name)])


# ---- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,expect",
    [
        ("corrupt", "cannot read GeoTIFF"),
        ("truncated", "cannot read GeoTIFF"),
        ("bands", "12 bands, expected 13"),
        ("size", "size 32x32, expected 64x64"),
        ("dtype", "dtype float32, expected uint16"),
    ],
)
def test_bad_tile(tiny_eurosat, kind, expect):
    bad = tiny_eurosat / "River" / "River_bad.tif"
    if kind == "corrupt":
        bad.write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    elif kind == "truncated":
        write_tif(bad, seed=5)
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 3])
    elif kind == "bands":
        write_tif(bad, bands=12)
    elif kind == "size":
        write_tif(bad, size=32)
    elif kind == "dtype":
        write_tif(bad, dtype="float32")
    with pytest.raises(ValueError, match=expect) as e:
        load_eurosat(tiny_eurosat, cache_dir=False, progress=False)
    assert "River_bad.tif" in str(e.value)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = load_eurosat(tiny_eurosat, cache_dir=False, on_error="skip", progress=False)
    assert len(ds) == 12 and "River/River_bad.tif" not in ds.paths
    assert ds.skipped == [("River/River_bad.tif", ds.skipped[0][1])] and expect.split(",")[0] in ds.skipped[0][1]


def test_skip_reports_every_file(tiny_eurosat, tmp_path):
    write_tif(tiny_eurosat / "River" / "a.tif", bands=3)
    write_tif(tiny_eurosat / "Forest" / "b.tif", size=16)
    (tiny_eurosat / "Empty").mkdir()
    with pytest.raises(ValueError, match="Empty"):
        load_eurosat(tiny_eurosat, cache_dir=False, progress=False)
    with pytest.warns(UserWarning, match="skipped 3"):
        ds = load_eurosat(tiny_eurosat, cache_dir=tmp_path, on_error="skip", progress=False)
    assert sorted(p for p, _ in ds.skipped) == ["Empty", "Forest/b.tif", "River/a.tif"]
    assert len(ds) == 12 and "Empty" in ds.classes  # label ids stay those of the folder list
    again = load_eurosat(tiny_eurosat, cache_dir=tmp_path, on_error="skip", progress=False)
    assert again.from_cache and again.skipped == ds.skipped  # the report survives the cache


def test_empty_class_folder(tiny_eurosat):
    (tiny_eurosat / "Pasture").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*Pasture.* holds no tiles"):
        load_eurosat(tiny_eurosat, cache_dir=False, progress=False)


def test_root_without_class_folders(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="has no class folders"):
        load_eurosat(tmp_path / "r", cache_dir=False)
    with pytest.raises(ValueError, match="is not a folder"):
        load_eurosat(tmp_path / "missing", cache_dir=False)
    with pytest.raises(ValueError, match="on_error='ignore'"):
        load_eurosat(tmp_path / "r", on_error="ignore")


def test_ssl4eo_missing_band(data_root, tmp_path):
    root = tmp_path / "s12"
    shutil.copytree(data_root / "ssl4eo-s12-sample", root)
    scene = next(p for p in (root / "000001").iterdir() if p.is_dir())
    (scene / "B8A.tif").unlink()
    with pytest.raises(ValueError, match=r"lacks band file\(s\) \['B8A'\]") as e:
        load_ssl4eo(root)
    assert scene.name in str(e.value)
    with pytest.warns(UserWarning, match="skipped 1"):
        s = load_ssl4eo(root, on_error="skip")
    assert len(s) == 1


def test_ssl4eo_bad_band_file(data_root, tmp_path):
    root = tmp_path / "s12"
    shutil.copytree(data_root / "ssl4eo-s12-sample", root)
    scene = next(p for p in (root / "000000").iterdir() if p.is_dir())
    (scene / "B9.tif").write_bytes(b"not a tiff")
    s = load_ssl4eo(root)
    with pytest.raises(ValueError, match="B9.tif: cannot read GeoTIFF"):
        s[0]


# ---- the cache ------------------------------------------------------------------------------------------------------
def test_cache_rebuilds_when_files_change(tiny_eurosat, tmp_path):
    first = load_eurosat(tiny_eurosat, cache_dir=tmp_path, progress=False)
    assert not first.from_cache and len(first) == 12
    assert load_eurosat(tiny_eurosat, cache_dir=tmp_path, progress=False).from_cache
    write_tif(tiny_eurosat / "SeaLake" / "SeaLake_7.tif", seed=77)
    added = load_eurosat(tiny_eurosat, cache_dir=tmp_path, progress=False)
    assert not added.from_cache and len(added) == 13 and "SeaLake/SeaLake_7.tif" in added.paths
    (tiny_eurosat / "Forest" / "Forest_0.tif").unlink()
    removed = load_eurosat(tiny_eurosat, cache_dir=tmp_path, progress=False)
    assert not removed.from_cache and len(removed) == 12 and "Forest/Forest_0.tif" not in removed.paths
    write_tif(tiny_eurosat / "River" / "River_1.tif", seed=1234)  # same name, new content
    changed = load_eurosat(tiny_eurosat, cache_dir=tmp_path, progress=False)
    assert not changed.from_cache
    assert load_eurosat(tiny_eurosat, cache_dir=tmp_path, progress=False).from_cache


def test_cache_never_half_written(tiny_eurosat, tmp_path, monkeypatch):
    import mimeo_nb.data as data

    calls = {"n": 0}
    real = data.read_tile

    def flaky(p, size=64):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(p, size)

    monkeypatch.setattr(data, "read_tile", flaky)
    with pytest.raises(KeyboardInterrupt):
        load_eurosat(tiny_eurosat, cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.rglob("index.json")) and not list(tmp_path.rglob("images.npy"))
    monkeypatch.setattr(data, "read_tile", real)
    assert not load_eurosat(tiny_eurosat, cache_dir=tmp_path, progress=False).from_cache


# ---- splits, fractions, statistics -----------------------------------------------------------------------------------
def test_splits_and_fractions(ms_sample):
    ds = load_eurosat(ms_sample, progress=False)
    sp = split_indices(ds.labels)
    again = split_indices(ds.labels)
    for k in sp:
        np.testing.assert_array_equal(sp[k], again[k])
    from sklearn.model_selection import train_test_split  # the study's exact call

    tr, te = train_test_split(np.arange(len(ds)), train_size=0.8, stratify=ds.labels, random_state=42)
    np.testing.assert_array_equal(sp["train"], np.sort(tr))
    np.testing.assert_array_equal(sp["test"], np.sort(te))
    other = split_indices(ds.labels, seed=1)
    assert not np.array_equal(other["test"], sp["test"])
    counts = {}
    for f in (1.0, 0.5, 0.1, 0.01):
        idx = label_fraction(sp["train"], ds.labels, f)
        np.testing.assert_array_equal(idx, label_fraction(sp["train"], ds.labels, f))
        assert set(idx) <= set(sp["train"])
        per_class = np.bincount(ds.labels[idx], minlength=10)
        n_class = np.bincount(ds.labels[sp["train"]], minlength=10)
        np.testing.assert_array_equal(per_class, np.minimum(n_class, np.maximum(1, np.round(f * n_class).astype(int))))
        counts[f] = idx
    assert set(counts[0.01]) <= set(counts[0.1]) <= set(counts[0.5]) <= set(counts[1.0])
    assert len(counts[1.0]) == len(sp["train"]) == 335 and len(np.unique(ds.labels[counts[0.01]])) == 10
    assert not np.array_equal(label_fraction(sp["train"], ds.labels, 0.5, seed=7), counts[0.5])


@pytest.mark.parametrize("bad", ["0.5"])
def test_bad_fraction(bad):
    with pytest.raises(ValueError, match="fraction="):
        label_fraction(np.arange(10), np.arange(10) % 2, bad)


def test_fraction_leaving_class_empty():
    labels = np.array([0] * 50 + [1] * 2)
    with pytest.raises(ValueError, match=r"leaves class\(es\) \[1\]"):
        label_fraction(np.arange(52), labels, 0.02, method="study", seed=0)
    assert len(label_fraction(np.arange(52), labels, 0.02, method="study", seed=0, allow_missing_classes=True)) == 1


def test_spatial_split(ms_sample):
    ds = load_eurosat(ms_sample, progress=False)
    sp = spatial_split(ds.lonlat, ds.labels)
    assert len(np.intersect1d(sp["train"], sp["test"])) == 0 and len(sp["train"]) + len(sp["test"]) == 419
    for c in range(10):
        tr = sp["train"][ds.labels[sp["train"]] == c]
        te = sp["test"][ds.labels[sp["test"]] == c]
        assert len(te) == round(0.2 * (len(tr) + len(te))) and ds.lonlat[tr, 0].max() <= ds.lonlat[te, 0].min()


def test_band_stats_and_normalise(tiny_eurosat):
    ds = load_eurosat(tiny_eurosat, cache_dir=False, progress=False)
    m, s = band_stats(ds.images, chunk=5)  # several chunks
    x = ds.images.astype(np.float64)
    np.testing.assert_allclose(m, x.mean((0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(s, x.std((0, 2, 3)), rtol=1e-8)
    xb = torch.from_numpy(ds.images)
    z = BandNormalize("zscore", m, s)(xb)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(13), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="needs mean and std"):
        BandNormalize("zscore")
    with pytest.raises(ValueError, match="input has 3 bands"):
        BandNormalize("zscore", m, s)(xb[:, :3])
    with pytest.raises(ValueError, match="indices is empty"):
        band_stats(ds.images, [])

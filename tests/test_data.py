"""The data layer on the real samples in ../shared/data (the checks on generated fixtures are in nbs/00_data.ipynb)."""

import shutil

import numpy as np
import pytest

from mimeo_nb.data import label_fraction, load_eurosat, load_ssl4eo, spatial_split, split_indices


# ---- the real samples -------------------------------------------------------------------------------------------
def test_real_ms_sample(ms_sample, tmp_path):
    ds = load_eurosat(ms_sample, cache_dir=tmp_path, progress=False)
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
    assert isinstance(again.images, np.memmap)
    assert again.paths == ds.paths and again.crs == ds.crs
    assert all(c.startswith("EPSG:326") for c in ds.crs)  # UTM north


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
    full = s.read_scene(s.scenes[1][0])
    import rasterio

    with rasterio.open(s.scenes[1][0] / "B8A.tif") as src:
        assert (src.height, src.width) == (132, 132)
    with rasterio.open(s.scenes[1][0] / "B4.tif") as src:
        np.testing.assert_array_equal(full[3], src.read(1))  # 10 m band untouched


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


# ---- splits and fractions -----------------------------------------------------------------------------------------
def test_splits_and_fractions(ms_sample):
    ds = load_eurosat(ms_sample, progress=False)
    sp = split_indices(ds.labels)
    from sklearn.model_selection import train_test_split  # the study's exact call

    tr, te = train_test_split(np.arange(len(ds)), train_size=0.8, stratify=ds.labels, random_state=42)
    np.testing.assert_array_equal(sp["train"], np.sort(tr))
    np.testing.assert_array_equal(sp["test"], np.sort(te))
    other = split_indices(ds.labels, seed=1)
    assert not np.array_equal(other["test"], sp["test"])
    counts = {}
    for f in (1.0, 0.5, 0.1, 0.01):
        idx = label_fraction(sp["train"], ds.labels, f)
        assert set(idx) <= set(sp["train"])
        per_class = np.bincount(ds.labels[idx], minlength=10)
        n_class = np.bincount(ds.labels[sp["train"]], minlength=10)
        np.testing.assert_array_equal(per_class, np.minimum(n_class, np.maximum(1, np.round(f * n_class).astype(int))))
        counts[f] = idx
    assert len(counts[1.0]) == len(sp["train"]) == 335
    assert not np.array_equal(label_fraction(sp["train"], ds.labels, 0.5, seed=7), counts[0.5])


def test_spatial_split(ms_sample):
    ds = load_eurosat(ms_sample, progress=False)
    sp = spatial_split(ds.lonlat, ds.labels)
    assert len(np.intersect1d(sp["train"], sp["test"])) == 0 and len(sp["train"]) + len(sp["test"]) == 419
    for c in range(10):
        n_train, n_test = (ds.labels[sp["train"]] == c).sum(), (ds.labels[sp["test"]] == c).sum()
        assert n_test == round(0.2 * (n_train + n_test))

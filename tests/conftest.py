"""Shared fixtures: the real sample data in ../shared/data (or $MIMEO_DATA) and generated GeoTIFF fixtures."""

import os
from pathlib import Path

import numpy as np
import pytest

from mimeo_nb.data import find_data

REPO = Path(__file__).resolve().parents[1]

# tests and the notebooks they run draw figures off screen and print text progress bars (a user's JupyterLab keeps its own settings)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MIMEO_PROGRESS", "text")


@pytest.fixture(scope="session")
def data_root() -> Path:
    d = find_data()
    if d is None:
        if os.environ.get("CI"):
            pytest.fail("CI must set MIMEO_DATA to the shared sample data")
        pytest.skip("sample data not found: set MIMEO_DATA to the folder holding eurosat-ms-sample/")
    return d


@pytest.fixture(scope="session")
def ms_sample(data_root) -> Path:
    return data_root / "eurosat-ms-sample"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    "Every test writes caches and downloads into its own folder, never into ~/.cache."
    monkeypatch.setenv("MIMEO_CACHE", str(tmp_path_factory.mktemp("cache")))


def write_tif(path: Path, bands: int = 13, size: int = 64, dtype="uint16", seed: int = 0, crs="EPSG:32632"):
    "Write a small random GeoTIFF tile (EuroSAT-like: UTM CRS, 10 m pixels)."
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4000, (bands, size, size)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=size,
        width=size,
        count=bands,
        dtype=dtype,
        crs=crs,
        transform=from_origin(500000 + 1000 * seed, 5500000, 10, 10),
    ) as dst:
        dst.write(a)
    return a


@pytest.fixture
def tiny_eurosat(tmp_path) -> Path:
    "A generated EuroSAT-layout root: 3 classes x 4 random 13-band tiles."
    root = tmp_path / "eurosat"
    for c, name in enumerate(["Forest", "River", "SeaLake"]):
        for i in range(4):
            write_tif(root / name / f"{name}_{i}.tif", seed=10 * c + i)
    return root

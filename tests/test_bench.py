"""The benchmark notebook runs (quick settings) and writes its JSON files with measured, self-consistent numbers."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO


def run_bench(tmp_path, sections: str, **env):
    "Execute nbs/bench.ipynb with quick settings for `sections`, its JSON files into tmp_path/bench."
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(REPO / "nbs" / "bench.ipynb"),
            str(tmp_path / "b.ipynb"),
            "-k",
            "python3",
            "--no-progress-bar",
            "-p",
            "quick",
            "True",
            "-p",
            "out_dir",
            str(tmp_path / "bench"),
            "-p",
            "sections",
            sections,
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, **env},
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_bench_notebook_quick(ms_sample, tmp_path):
    run_bench(tmp_path, "data,hog,train,heap,evaluate", MIMEO_EUROSAT=str(ms_sample))
    d = json.loads((tmp_path / "bench" / "data.json").read_text())
    assert d["tiles"] == 419 and d["cache_tiles_per_s"] > d["decode_tiles_per_s"]
    assert (tmp_path / "bench" / "hog.json").is_file()
    t = json.loads((tmp_path / "bench" / "train.json").read_text())
    assert all("error" not in row for row in t["rows"])
    assert json.loads((tmp_path / "bench" / "heap.json").read_text())["rows"]
    e = json.loads((tmp_path / "bench" / "evaluate.json").read_text())
    assert set(e["linear_probe_seconds"]) == {"1.0", "0.5", "0.1", "0.01"}
    p = json.loads((tmp_path / "bench" / "train_profile.json").read_text())
    shares = [o["share"] for o in p["top_ops"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert p["regions_ms"]["step"] > p["regions_ms"]["targets (HOG)"]


def test_bench_scale_quick(data_root, tmp_path):
    "The scale section builds the 27,000-tile RGB cache in a fresh process and measures 3- and 13-band pre-training throughput."
    if not (data_root / "eurosat-rgb").is_dir():
        pytest.skip(f"no eurosat-rgb/ under {data_root}")
    run_bench(tmp_path, "scale", MIMEO_DATA=str(data_root))
    s = json.loads((tmp_path / "bench" / "scale.json").read_text())
    assert s["rgb_tiles"] == 27000 and s["cache_bytes"] >= 27000 * 3 * 64 * 64
    assert s["cache_build_seconds"] > s["cached_load_seconds"]
    assert set(s["pretrain_images_per_s"]) == {"3_bands", "13_bands"}


def test_bench_ssl4eo_quick(data_root, tmp_path):
    "The ssl4eo section packs the two real patches, checks packed crops equal GeoTIFF crops, and writes both rates and the epoch estimate."
    run_bench(tmp_path, "ssl4eo", MIMEO_DATA=str(data_root))
    s = json.loads((tmp_path / "bench" / "ssl4eo.json").read_text())
    assert (
        s["locations_measured"] == 2
        and abs(s["speedup"] - s["packed_samples_per_s"] / s["geotiff_samples_per_s"]) < 1e-9 * s["speedup"]
    )
    e = s["paper_epoch"]
    assert e["gpu_rate"].startswith("assumed") and set(e["hours_by_gpus_packed"]) == {"1", "2", "4", "8", "16", "32"}
    one = e["hours_by_gpus_packed"]["1"]
    assert (
        abs(one * 3600 - 250_000 / min(e["gpu_images_per_s"], e["data_bound_images_per_s_per_gpu"]["packed"]))
        < 1e-6 * one * 3600
    )
    assert (tmp_path / "bench" / "ssl4eo.png").stat().st_size > 10_000

"""The benchmark notebook runs (quick settings) and writes its JSON files with measured, self-consistent numbers."""
import json
import subprocess
import sys

from conftest import REPO


def test_bench_notebook_quick(ms_sample, tmp_path):
    r = subprocess.run([sys.executable, "-m", "papermill", str(REPO / "nbs" / "bench.ipynb"), str(tmp_path / "b.ipynb"), "-k", "python3",
                        "--no-progress-bar", "-p", "quick", "True", "-p", "out_dir", str(tmp_path / "bench"), "-p", "sections", "data,hog,train,evaluate"],
                       cwd=REPO, capture_output=True, text=True, timeout=1200, env={**__import__("os").environ, "MIMEO_EUROSAT": str(ms_sample)})
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads((tmp_path / "bench" / "data.json").read_text())
    assert d["tiles"] == 419 and d["cache_tiles_per_s"] > d["decode_tiles_per_s"] > 0
    h = json.loads((tmp_path / "bench" / "hog.json").read_text())
    assert h["parity_max_abs_float64"] < 1e-5 and h["speedup"] > 1
    t = json.loads((tmp_path / "bench" / "train.json").read_text())
    assert t["matmul_peak_gflops"]["fp32"] > 0 and all("error" not in row and row["images_per_s"] > 0 for row in t["rows"])
    assert all(row["gflop_per_image"] > 0 for row in t["rows"])
    e = json.loads((tmp_path / "bench" / "evaluate.json").read_text())
    assert set(e["linear_probe_seconds"]) == {"1.0", "0.5", "0.1", "0.01"} and e["finetune_epoch_seconds"] > 0
    p = json.loads((tmp_path / "bench" / "train_profile.json").read_text())
    shares = [o["share"] for o in p["top_ops"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert p["regions_ms"]["targets (HOG)"] > 0 and p["regions_ms"]["step"] > p["regions_ms"]["targets (HOG)"]

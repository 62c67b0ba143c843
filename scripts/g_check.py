"""Quick check of HOG variant G on EuroSAT RGB from the second edition's first units (pretrain-hog-G, probe-random,
probe-hog-G): its masked-cell error against the mean predictor's, and its linear probe at 100 % of the labels against the
random encoder's (McNemar's exact test on the 5,400 test tiles).

    python scripts/g_check.py --runs results/runs-rgb [--out results/recipes/g-check.json]
"""
import argparse, json, os
from pathlib import Path

from mimeo_nb.config import RUN_FILES, repo_root, run_finished
from mimeo_nb.data import atomic_write_text, load_eurosat
from mimeo_nb.plots import _predictions
from mimeo_nb.stats import mcnemar_test
from mimeo_nb.study import _Units

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--runs", default="results/runs-rgb", help="the run folders of the RGB study")
ap.add_argument("--out", default="results/recipes/g-check.json", help="where the summary is written")
a = ap.parse_args()

data = os.environ.get("MIMEO_EUROSAT_RGB", str(repo_root().parent / "shared/data/eurosat-rgb"))
tiles = load_eurosat(data, progress=False)
units = _Units("cpu-rgb", data, str(Path(a.runs).resolve()), {}, tiles.fingerprint)
dirs = {n: units(n)[1] for n in ("pretrain-hog-G", "probe-random", "probe-hog-G")}
if missing := [n for n, d in dirs.items() if not run_finished(d)]:
    raise SystemExit(f"not finished yet in {a.runs}: {missing}")


def correct(d):  # per test tile (in path order), whether the linear probe at 100 % (first draw) is right
    p = _predictions(str(d))
    p = p[(p.strategy == "linear") & (p.fraction == 1.0) & (p.seed == 42)].sort_values("path")
    return (p.true == p.predicted).to_numpy()


g, r = correct(dirs["probe-hog-G"]), correct(dirs["probe-random"])
q = json.loads((dirs["pretrain-hog-G"] / RUN_FILES["quality"]).read_text())
out = dict(
    masked_cell_mse_ratio=q["heads"]["hog"]["mse_ratio"],
    quality_tiles=q["tiles"],
    linear_100=dict(G=float(g.mean()), random=float(r.mean())),
    difference_points=100 * float(g.mean() - r.mean()),
    mcnemar=mcnemar_test(g, r),
    runs={n: d.name for n, d in dirs.items()},
)
atomic_write_text(Path(a.out), json.dumps(out, indent=1))
print(json.dumps(out, indent=1))

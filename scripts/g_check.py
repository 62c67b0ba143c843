"""Quick check of HOG variant G on EuroSAT RGB after its 10-epoch pre-training: its masked-cell error against the mean
predictor's, and its linear probe at 100 % of the labels against the random encoder's (McNemar), through the study's code.

    MIMEO_CHECKPOINTS=~/.cache/mimeo_nb/checkpoints python scripts/g_check.py [--out results/recipes/g-check.json]

The pre-training is reused from $MIMEO_CHECKPOINTS (resumed or run when absent: about 30 minutes at fp32 on 2 cores).
Both runs write their run folders under ~/.cache/mimeo_nb/g-check; the summary goes to --out.
"""
import argparse, json, os
from pathlib import Path

from mimeo_nb.config import make_config, repo_root
from mimeo_nb.data import atomic_write_text, load_eurosat
from mimeo_nb.plots import _predictions
from mimeo_nb.stats import mcnemar_test
from mimeo_nb.study import Experiment

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--out", default="results/recipes/g-check.json", help="where the summary is written")
ap.add_argument("--runs", default="~/.cache/mimeo_nb/g-check", help="the run folders of the two evaluations")
a = ap.parse_args()

root = repo_root()
data = os.environ.get("MIMEO_EUROSAT_RGB", str(root.parent / "shared/data/eurosat-rgb"))
tiles = load_eurosat(data, progress=False)
runs = str(Path(a.runs).expanduser())
common = dict(data_dir=data, out_dir=runs, evaluations=["linear"], fractions=[1.0], seeds=[42])
res = {}
for name, ov in dict(G=dict(target="hog", variant="G", mask=0.7), random=dict(init="random")).items():
    ex = Experiment(make_config("cpu-rgb", **common, **ov), tiles, progress=False)
    d = ex.run_dir if ex.finished else ex.run()
    res[name] = Path(d)


def correct(d):  # per test tile (in path order), whether the linear probe at 100 % is right
    p = _predictions(str(d))
    p = p[(p.strategy == "linear") & (p.fraction == 1.0)].sort_values("path")
    return (p.true == p.predicted).to_numpy()


ok = {k: correct(d) for k, d in res.items()}
q = json.loads((res["G"] / "quality.json").read_text())["heads"]["hog"]
t = mcnemar_test(ok["G"], ok["random"])
out = dict(
    masked_cell_mse_ratio=q["mse_ratio"],
    linear_100=dict(G=float(ok["G"].mean()), random=float(ok["random"].mean())),
    difference_points=100 * float(ok["G"].mean() - ok["random"].mean()),
    mcnemar=t,
    runs={k: str(d) for k, d in res.items()},
)
atomic_write_text(Path(a.out), json.dumps(out, indent=1, default=float))
print(json.dumps(out, indent=1, default=float))

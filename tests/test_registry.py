"""A new pretext target in one place: declared once, it pre-trains, joins both studies' grids and gets its column and row
in the report's tables; and the package's import graph points down."""

import ast
from pathlib import Path

import torch

from conftest import REPO


def _mean_colour(model, x):  # [B, C, H, W] -> [B, L, C]: every patch's mean value per band
    return torch.nn.functional.avg_pool2d(x, model.patch_size).flatten(2).transpose(1, 2)


def test_a_new_target_and_variant_declared_once(ms_sample, tmp_path):
    from mimeo_nb.config import make_config
    from mimeo_nb.experiments import rgb_grid, study_grid
    from mimeo_nb.config import load_runs
    from mimeo_nb.plots import loss_table, merge_units, normalisation_table
    from mimeo_nb.registry import TargetSpec, Variant, declared
    from mimeo_nb.study import Experiment
    import json

    colour = TargetSpec("colour", dict(colour_norm=False), dim=lambda s: s["in_chans"], compute=_mean_colour)
    with declared([colour], {"M": Variant("colour", dict(colour_norm=False), "mean colour")}):
        # it pre-trains and is evaluated like the study's targets
        cfg = make_config("smoke", target="colour", variant="M", data_dir=str(ms_sample), out_dir=str(tmp_path),
                          device="cpu", evaluations=["linear", "knn"], fractions=[1.0])
        run = Experiment(cfg, progress=False).run()
        meta = json.loads((run / "config.json").read_text())
        quality = json.loads((run / "quality.json").read_text())
        assert set(quality["heads"]) == {"colour"} and quality["heads"]["colour"]["mse_ratio"] > 0
        # both studies' grids hold it (the normalisation ablation at mask 0.7)
        assert dict(study_grid())["colour-M-m0.7"]["target"] == "colour"
        assert "probe-colour-M-m0.7-e3" in dict(rgb_grid())
        # the report's tables give it its column (normalisation ablation) and its row entry (final loss)
        runs = merge_units(load_runs(tmp_path))
        nt = normalisation_table(runs)
        acc = {m["strategy"]: m["accuracy"] for m in json.loads((run / "metrics.json").read_text())}
        assert nt.loc["Linear", "COLOUR M (mean colour)"] == acc["linear"]
        assert nt.loc["k-NN", "COLOUR M (mean colour)"] == acc["knn"]
        assert loss_table(runs).loc[0.7, "M"] == meta["final_loss"]
    assert "colour-M-m0.7" not in dict(study_grid())  # gone with its declaration


def _imports(path: Path, modules: set) -> set:
    "The package modules `path` imports (at module level or inside functions)."
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and n.module:
            name = n.module.removeprefix("mimeo_nb.") if n.level == 0 else n.module
            if n.level or n.module.startswith("mimeo_nb."):
                out.add(name.split(".")[0])
            elif n.module == "mimeo_nb":
                out |= {a.name for a in n.names}
        elif isinstance(n, ast.Import):
            out |= {a.name.split(".")[1] for a in n.names if a.name.startswith("mimeo_nb.")}
    return out & modules


def test_import_graph_points_down():
    pkg = REPO / "mimeo_nb"
    modules = {p.stem for p in pkg.glob("*.py") if not p.stem.startswith("_")}
    graph = {m: _imports(pkg / f"{m}.py", modules) - {m} for m in modules}
    assert not graph["config"] & {"model", "study", "train", "evaluate"}, graph["config"]
    order, seen = [], set()

    def visit(m, path):  # depth-first: a module on the current path again is a cycle
        assert m not in path, f"import cycle: {' -> '.join([*path, m])}"
        if m in seen:
            return
        for d in sorted(graph[m]):
            visit(d, [*path, m])
        seen.add(m)
        order.append(m)

    for m in sorted(modules):
        visit(m, [])
    assert order.index("registry") < order.index("config") < order.index("experiments") < order.index("study")

"""The committed results/ are what nbs/report.ipynb regenerates from the committed run folders, and README shows them."""

import re
import shutil

import pytest

from conftest import REPO

RESULTS = REPO / "results"


def assert_report_regenerates(tmp_path):
    "Regenerate the report from the committed run folders (results/runs, results/runs-rgb) and benchmarks; compare with the committed one."
    from mimeo_nb.study import run_report

    for name in ("runs", "runs-rgb", "bench"):
        if (RESULTS / name).is_dir():
            shutil.copytree(
                RESULTS / name, tmp_path / name, ignore=shutil.ignore_patterns("_checkpoints", "*.safetensors")
            )
    run_report(tmp_path)
    committed = sorted(p.name for p in (RESULTS / "tables").iterdir())
    assert committed == sorted(p.name for p in (tmp_path / "tables").iterdir())
    for name in committed:
        assert (tmp_path / "tables" / name).read_text() == (RESULTS / "tables" / name).read_text(), name
    assert sorted(p.name for p in (RESULTS / "figures").iterdir()) == sorted(
        p.name for p in (tmp_path / "figures").iterdir()
    )

    def body(text):
        return re.sub(r"on \d{4}-\d{2}-\d{2}", "on DATE", text)

    assert body((tmp_path / "README.md").read_text()) == body((RESULTS / "README.md").read_text())


@pytest.mark.skipif(not (RESULTS / "runs").is_dir(), reason="no committed results yet")
def test_committed_results_are_what_the_report_regenerates(tmp_path):
    assert_report_regenerates(tmp_path)


@pytest.mark.parametrize("table", ["t5_strategies.md", "rgb_t5_strategies.md", "rgb_targets.md"])
def test_readme_shows_the_committed_numbers(table):
    if not (RESULTS / "tables" / table).is_file():
        pytest.skip(f"no committed {table}")
    readme = (REPO / "README.md").read_text()
    rows = [
        l
        for l in (RESULTS / "tables" / table).read_text().splitlines()
        if l.startswith("| ") and any(c.isdigit() for c in l)
    ]
    assert rows and all(r in readme for r in rows), f"README's results table differs from results/tables/{table}"


def test_readme_says_each_section_once():
    "README (from nbs/index.ipynb) has no section twice: a stale copy of a results section would contradict the current one."
    heads, fenced = [], False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            heads.append(line)
    assert len(heads) == len(set(heads)), f"README repeats sections: {sorted({h for h in heads if heads.count(h) > 1})}"


def test_readme_benchmarks_are_the_committed_ones():
    "README's benchmark figures are the ones in results/bench/*.json (rounded as README writes them)."
    import json

    bench = RESULTS / "bench"
    if not (bench / "data.json").is_file():
        pytest.skip("no committed benchmarks")
    readme = " ".join((REPO / "README.md").read_text().split())

    def load(name):
        return json.loads((bench / f"{name}.json").read_text())

    d, h, s = load("data"), load("hog"), load("scale")
    expected = [
        f"{d['cache_tiles_per_s']:,.0f} tiles/s",
        f"{d['decode_tiles_per_s']:,.0f} tiles/s",
        f"**{d['cache_speedup']:.0f}x**",
        f"{h['torch_images_per_s']:,.0f} images/s",
        f"{h['skimage_images_per_s']:.0f} images/s",
        f"**{h['speedup']:.0f}x**",
        f"{s['cache_build_seconds']:.1f} s",
        f"{s['cache_build_peak_rss_gib']:.2f} GiB",
        f"{s['cache_bytes'] / 1e6:.0f} MB",
        f"{s['cached_tiles_per_s']:,.0f} tiles/s",
        f"{s['pretrain_images_per_s']['3_bands']:.0f} images/s",
    ]
    if (bench / "ssl4eo.json").is_file():
        q = load("ssl4eo")
        expected += [
            f"{q['geotiff_samples_per_s']:.0f} samples/s",
            f"{q['packed_samples_per_s']:,.0f} samples/s",
            f"**{q['speedup']:,.0f}x**",
        ]
    if (bench / "heap.json").is_file():
        rows = load("heap")["rows"]
        peaks = [r["limit_peak_memory_gib"] for r in rows]

        def cost(compiled):
            c = [
                round(100 * (1 - r["speed_ratio_limit_vs_default"]))
                for r in rows
                if ("compile" in r["mode"]) == compiled
            ]
            return f"{min(c)}-{max(c)} %"

        expected += [
            f"{min(peaks):.1f}-{max(peaks):.1f} GiB but costs {cost(False)} of the speed in eager mode and {cost(True)} compiled"
        ]
    if (bench / "compile.json").is_file():
        c = load("compile")
        fr, pr = c["finetune_ratio"], c["pretrain_ratio"]
        expected += [
            f"runs at {c['finetune_images_per_s']['eager']:.0f} images/s eager",
            f"{fr['eager+fused']:.2f}x, {fr['compile']:.2f}x and {fr['compile+fused']:.2f}x of that",
            f"{pr['eager+fused']:.2f}x, {pr['compile']:.2f}x and {pr['compile+fused']:.2f}x",
        ]
    missing = [e for e in expected if e not in readme]
    assert not missing, f"README does not show these committed benchmark figures: {missing}"


CLAIM_TABLES = ["rgb_claims", "rgb_t6_ablation_claims", "rgb_reference_claims", "t5_claims", "t6_ablation_claims"]


def committed_claims():
    import pandas as pd

    files = [RESULTS / "tables" / f"{n}.csv" for n in CLAIM_TABLES]
    return [pd.read_csv(f, index_col=0) for f in files if f.is_file()]


@pytest.mark.skipif(not (RESULTS / "tables").is_dir(), reason="no committed results yet")
@pytest.mark.parametrize("readme", ["README.md", "results/README.md"])
def test_prose_agrees_with_the_claims_tables(readme):
    "Every claim sentence of the README (verdict, sign, points, study's points, corrected p) is what its table says."
    from mimeo_nb.report import check_prose

    assert check_prose((REPO / readme).read_text(), committed_claims()) >= 44


@pytest.mark.skipif(not (RESULTS / "tables").is_dir(), reason="no committed results yet")
def test_readme_results_are_the_generated_blocks():
    "README's results blocks are exactly what `readme_blocks` builds from the committed tables (no hand-written findings)."
    from mimeo_nb.report import readme_blocks

    readme = (REPO / "README.md").read_text()
    blocks = readme_blocks()
    assert blocks
    for name, body in blocks.items():
        start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
        assert start in readme and end in readme, f"README lacks the {name} block"
        assert readme.split(start, 1)[1].split(end, 1)[0].strip() == body, f"README's {name} block is stale"


CELL = re.compile(r"^\d\.\d{4} \[\d\.\d{3}, \d\.\d{3}\]( \(\d+ draws\))?( \(\d\.\d{4}\))?$")


@pytest.mark.skipif(not (RESULTS / "tables").is_dir(), reason="no committed results yet")
def test_every_accuracy_cell_has_an_interval():
    "Every cell of the accuracy tables is an accuracy with its 95 % interval (or '-'), and no cell reads '± 0'."
    import pandas as pd

    names = ["t5_strategies", "t6_normalisation", "t6_masking", "t6_masking_extra"]
    names += [f"rgb_{n}" for n in names] + ["rgb_reference"]
    checked = 0
    for n in names:
        f = RESULTS / "tables" / f"{n}.csv"
        if not f.is_file():
            continue
        df = pd.read_csv(f, index_col=0).drop(columns=["fraction"], errors="ignore")
        for v in df.to_numpy().ravel():
            if isinstance(v, str) and v and not v.startswith("-"):  # '-' or '- (study)': not measured here
                assert CELL.match(v), f"{n}: '{v}' is not an accuracy with its interval"
                checked += 1
    assert checked > 50
    assert "± 0" not in (RESULTS / "README.md").read_text()

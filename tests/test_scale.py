"""Paper scale: packing SSL4EO-S12 survives a crash, two processes share an epoch exactly, the GPU check and `gpu-rgb` run on CPU."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from mimeo_nb.pack import PackedSSL4EO, make_ssl4eo_fixture, pack_ssl4eo, rank_batches, verify_pack

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fixture_pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl4eo")
    src = make_ssl4eo_fixture(root / "src", locations=7, seasons=2, grid=24, seed=1)
    pack_ssl4eo(src, root / "packed", grid=24, scenes_per_shard=3, progress=False)
    return src, root / "packed"


def test_resume_after_a_crash_mid_shard(fixture_pack, tmp_path):
    "A crash after a shard was renamed but before the index vouched for it, with a half-written next shard and table rows past the"
    "index: packing again removes what the index does not vouch for and ends byte-identical to an uninterrupted pack."
    src, clean = fixture_pack
    crashed = tmp_path / "crashed"
    pack_ssl4eo(src, crashed, grid=24, scenes_per_shard=3, progress=False)
    index = json.loads((crashed / "index.json").read_text())
    keep = 2  # the index vouches for two shards only
    rows_kept = sum(s["scenes"] for s in index["shards"][:keep]) + 1
    samples = (crashed / "samples.tsv").read_text().splitlines(keepends=True)
    index.update(
        shards=index["shards"][:keep], done=6, complete=False, samples_bytes=len("".join(samples[:rows_kept]).encode())
    )
    (crashed / "index.json").write_text(json.dumps(index))
    (crashed / ".shard-00003.npy.partial").write_bytes(b"half a shard")
    with pytest.raises(ValueError, match="incomplete"):
        verify_pack(crashed, progress=False)
    with pytest.raises(ValueError, match="incomplete"):
        PackedSSL4EO(crashed)
    pack_ssl4eo(src, crashed, grid=24, scenes_per_shard=3, progress=False)
    assert not list(crashed.glob(".*.partial"))
    for f in sorted(clean.iterdir()):
        if f.name != "index.json":
            assert (crashed / f.name).read_bytes() == f.read_bytes(), f.name
    assert verify_pack(crashed, progress=False)["scenes"] == 14


def test_truncated_shard_is_named(fixture_pack, tmp_path):
    src, clean = fixture_pack
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(clean, bad)
    with open(bad / "shard-00002.npy", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=r"shard-00002.npy: 100 bytes"):
        verify_pack(bad, progress=False)
    with pytest.raises(ValueError, match="shard-00002.npy"):
        PackedSSL4EO(bad, verify=True)


def test_bad_input_is_refused_clearly(fixture_pack, tmp_path):
    src, clean = fixture_pack
    with pytest.raises(ValueError, match="is not a folder"):
        pack_ssl4eo(tmp_path / "nowhere", tmp_path / "out", progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no pack"):
        pack_ssl4eo(src, tmp_path / "full", grid=24, progress=False)
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="other settings"):
        pack_ssl4eo(src, clean, grid=24, scenes_per_shard=5, progress=False)
    with pytest.raises(ValueError, match="exceeds the packed grid"):
        PackedSSL4EO(clean, size=32)
    r = subprocess.run(
        [sys.executable, "-m", "mimeo_nb.pack", str(src), str(tmp_path / "x"), "--grid", "25"],
        capture_output=True,
        text=True,
    )
    assert (
        r.returncode == 2
        and "mimeo-pack-ssl4eo: no scene" in r.stderr
        and "expected 25x25" in (tmp_path / "x" / "skipped.tsv").read_text()
    )


WORKER = textwrap.dedent("""
    import json, os, sys
    import torch, torch.distributed as dist
    from mimeo_nb.pack import PackedSSL4EO, packed_loader, rank_batches
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ds = PackedSSL4EO(sys.argv[1], size=16, seed=3)
    seen = {}
    for epoch in (0, 1):
        batches = rank_batches(len(ds), 2, rank, world, seed=3, epoch=epoch)
        got = list(packed_loader(ds, batches, epoch=epoch, workers=1))
        ds.set_epoch(epoch)
        assert all(torch.equal(x, torch.stack([ds[int(i)] for i in b])) for x, b in zip(got, batches))
        seen[epoch] = [int(i) for b in batches for i in b]
    out = [None] * world
    dist.all_gather_object(out, seen)
    if rank == 0: open(sys.argv[2], "w").write(json.dumps(out))
    dist.destroy_process_group()
""")


@pytest.mark.parametrize("locations", [8, 7])
def test_two_gloo_processes_see_each_sample_of_an_epoch_once(tmp_path, locations):
    "2 processes (gloo) over the packed dataset with a DataLoader worker each: disjoint samples, whose union is the epoch's."
    src = make_ssl4eo_fixture(tmp_path / "src", locations=locations, seasons=2, grid=24, seed=2)
    pack_ssl4eo(src, tmp_path / "packed", grid=24, scenes_per_shard=4, progress=False)
    (tmp_path / "worker.py").write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "packed"), str(tmp_path / "seen.json")],
            env={
                **os.environ,
                "RANK": str(r),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
            },
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    seen = json.loads((tmp_path / "seen.json").read_text())
    for epoch in ("0", "1"):
        a, b = seen[0][epoch], seen[1][epoch]
        assert not set(a) & set(b) and len(a) == len(set(a)) and len(b) == len(set(b)) and len(a) == len(b)
        epoch_samples = [
            int(i) for bt in rank_batches(locations, 4, 0, 1, seed=3, epoch=int(epoch)) for i in bt
        ]  # one process, batch 2 x 2
        assert sorted(a + b) == sorted(epoch_samples)
        assert len(a + b) == locations - locations % 4  # only the incomplete last step is dropped
    assert seen[0]["0"] != seen[0]["1"]  # a new order every epoch


def test_gpu_check_runs_on_cpu_and_refuses_to_fake_a_gpu_record(tmp_path):
    script = os.path.join(REPO, "scripts", "gpu_check.py")
    r = subprocess.run(
        [sys.executable, script, "--device", "cpu", "--tiny", "--out", str(tmp_path / "gpu.json")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((tmp_path / "gpu.json").read_text())
    assert (
        rec["ok"]
        and rec["checks"]["process_group"]["backend"] == "gloo"
        and rec["checks"]["process_group"]["all_reduce"] == [0, 1, 2, 3]
    )
    assert (
        rec["checks"]["bf16_step_hog"]["pred_dtypes"]["hog"] == "torch.bfloat16"
        and rec["checks"]["bf16_step_raw"]["tensors_updated"] > 0
    )
    assert set(rec["throughput"]) == {"vit_small_patch16_224", "vit_tiny_patch8_64"}
    assert all(v["peak_memory_gib"] > 0 and v["images_per_s"] > 0 for v in rec["throughput"].values())
    r = subprocess.run([sys.executable, script, "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 2 and "only from a CUDA device" in r.stderr


def test_gpu_rgb_profile_runs_tiny_on_cpu(ms_sample, tmp_path):
    "The `gpu-rgb` profile, shrunk to a minute (the 419-tile sample, one epoch each), runs a pre-training + probe + fine-tuning unit end to end on CPU."
    from mimeo_nb.config import make_config
    from mimeo_nb.experiments import rgb_grid, study_grid
    from mimeo_nb.study import Experiment

    assert [n for n, _ in study_grid(profile="gpu-rgb")][:8] == [n for n, _ in rgb_grid("cpu-rgb")][:8]
    long = dict(rgb_grid("gpu-rgb"))["finetune-random-f1-s42-long"]
    assert long["ft_epochs"] == 100 and "ft_epochs" not in dict(rgb_grid("gpu-rgb"))["finetune-raw-A-f0.01-s42"]
    cfg = make_config(
        "gpu-rgb",
        data_dir=str(ms_sample),
        out_dir=str(tmp_path),
        device="cpu",
        max_tiles=0,
        epochs=1,
        batch_size=16,
        warmup_epochs=0,
        ft_epochs=1,
        ft_batch=16,
        eval_batch=64,
        evaluations=["linear", "finetune"],
        fractions=[1.0],
        seeds=[42],
        target="raw",
        variant="A",
    )
    d = Experiment(cfg, progress=False).run()
    meta = json.loads((d / "config.json").read_text())
    assert meta["status"] == "finished" and meta["config"]["profile"] == "gpu-rgb"
    assert {r["strategy"] for r in json.loads((d / "metrics.json").read_text())} == {"linear", "finetune"}

"""Pre-training: exact resume after SIGKILL (bitwise on CPU), DDP equivalence under torchrun, bad checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from mimeo_nb.config import make_config
from mimeo_nb.data import load_eurosat
from mimeo_nb.train import PretrainData, pretrain

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
COMMON = [
    "--profile",
    "smoke",
    "--max-tiles",
    "120",
    "--batch-size",
    "16",
    "--target",
    "hog",
    "--variant",
    "C",
    "--precision",
    "fp32",
    "--device",
    "cpu",
    "--checkpoint-every",
    "1",
    "--warmup-epochs",
    "1",
]


def train_cmd(out, epochs, extra=()):
    return [
        sys.executable,
        "-m",
        "mimeo_nb.train",
        *COMMON,
        "--epochs",
        str(epochs),
        "--checkpoint-dir",
        str(out),
        "--deterministic",
        *extra,
    ]


def test_resume_after_sigkill_is_bitwise_identical(ms_sample, tmp_path):
    env = {**ENV, "MIMEO_EUROSAT": str(ms_sample)}
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    subprocess.run(train_cmd(ref, 3), env=env, check=True, capture_output=True, timeout=600)
    p = subprocess.Popen(train_cmd(crashed, 3), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while (
        not (crashed / "history.csv").is_file() or len(pd.read_csv(crashed / "history.csv")) < 1
    ):  # epoch 1 checkpointed
        assert p.poll() is None and time.time() < deadline, p.stdout.read().decode()[-2000:]
        time.sleep(0.05)
    time.sleep(0.6)  # into epoch 2
    assert p.poll() is None, "the run ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    state = torch.load(crashed / "checkpoint.pt", weights_only=False)
    assert state["epoch"] in (1, 2)  # the last complete checkpoint
    subprocess.run(train_cmd(crashed, 3), env=env, check=True, capture_output=True, timeout=600)
    a = torch.load(ref / "checkpoint.pt", weights_only=False)
    b = torch.load(crashed / "checkpoint.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def test_ddp_two_processes_match_one_with_double_batch(ms_sample, tmp_path):
    env = {**ENV, "MIMEO_EUROSAT": str(ms_sample)}
    one, two = tmp_path / "h1.json", tmp_path / "h2.json"
    base = [
        "--profile",
        "smoke",
        "--max-tiles",
        "120",
        "--target",
        "raw+hog",
        "--variant",
        "AC",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--warmup-epochs",
        "1",
    ]

    def run(launcher, batch, name, history, **kw):
        "python [-m torch.distributed.run ...] -m mimeo_nb.train with `base`, writing its history JSON to `history`."
        args = ["-m", "mimeo_nb.train", *base, "--batch-size", batch, "--checkpoint-dir", str(tmp_path / name)]
        cmd = [sys.executable, *launcher, *args, "--history-json", str(history)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)

    run([], "16", "r1", one, check=True)
    r = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], "8", "r2", two)
    assert r.returncode == 0, r.stderr[-3000:]
    h1, h2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        for k in ("loss", "raw", "hog", "lr"):
            assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])), (k, a[k], b[k])


@pytest.fixture(scope="module")
def tiles(ms_sample):
    return load_eurosat(ms_sample, progress=False)


def test_bad_checkpoints_are_refused_and_kept(tiles, tmp_path):
    cfg = make_config("smoke", epochs=1, device="cpu", target="raw", variant="B")
    pretrain(cfg, tmp_path, PretrainData(cfg, tiles), progress=False)
    ck = tmp_path / "checkpoint.pt"
    before = ck.read_bytes()
    with pytest.raises(ValueError, match=r"another architecture: target='raw' in the checkpoint vs 'hog'.*variant='B'"):
        pretrain(cfg.replace(target="hog", variant="C", epochs=2), tmp_path, PretrainData(cfg, tiles), progress=False)
    with pytest.raises(ValueError, match="preset='vit_tiny_patch8_64' in the checkpoint vs 'vit_small_patch8_64'"):
        pretrain(
            cfg.replace(preset="vit_small_patch8_64", epochs=2), tmp_path, PretrainData(cfg, tiles), progress=False
        )
    assert ck.read_bytes() == before
    corrupt = tmp_path / "c"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(before[: len(before) // 2])
    with pytest.raises(ValueError, match=r"checkpoint .*c/checkpoint.pt' is unreadable"):
        pretrain(cfg, corrupt, PretrainData(cfg, tiles), progress=False)
    assert (corrupt / "checkpoint.pt").read_bytes() == before[: len(before) // 2]
    with pytest.raises(ValueError, match="does not exist"):
        pretrain(cfg, tmp_path / "none", PretrainData(cfg, tiles), resume=True, progress=False)
    (corrupt / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="unreadable"):
        pretrain(cfg, corrupt, PretrainData(cfg, tiles), progress=False)


def test_history_and_schedule(tiles, tmp_path):
    cfg = make_config("smoke", epochs=3, warmup_epochs=1, device="cpu", target="raw", variant="A", checkpoint_every=2)
    r = pretrain(cfg, tmp_path, PretrainData(cfg, tiles), progress=False)
    h = pd.read_csv(tmp_path / "history.csv")
    assert list(h.columns[:3]) == ["epoch", "loss", "raw"] and {"lr", "images_per_s", "seconds"} <= set(h.columns)
    assert list(h.epoch) == [1, 2, 3] and (h.images_per_s > 0).all() and r.final_loss == h.loss.iloc[-1]
    assert (
        torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 3
    )  # the last epoch is always checkpointed

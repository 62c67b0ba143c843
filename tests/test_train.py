"""Pre-training in subprocesses: exact resume after SIGKILL (bitwise on CPU), DDP equivalence under torchrun.

Bad checkpoints, the history and the checkpoint schedule are checked in nbs/04_train.ipynb."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import torch

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

    def run(launcher, batch, name, history, check=False):
        "python [-m torch.distributed.run ...] -m mimeo_nb.train with `base`, writing its history JSON to `history`."
        args = ["-m", "mimeo_nb.train", *base, "--batch-size", batch, "--checkpoint-dir", str(tmp_path / name)]
        cmd = [sys.executable, *launcher, *args, "--history-json", str(history)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=check)

    run([], "16", "r1", one, check=True)
    r = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], "8", "r2", two)
    assert r.returncode == 0, r.stderr[-3000:]
    h1, h2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        for k in ("loss", "raw", "hog", "lr"):
            assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])), (k, a[k], b[k])

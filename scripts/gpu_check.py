"""Check mimeo_nb's CUDA paths on one GPU and write what was measured to results/bench/gpu.json.

    python scripts/gpu_check.py                      # on a GPU machine: writes results/bench/gpu.json
    python scripts/gpu_check.py --device cpu --tiny --out /tmp/gpu.json   # the same checks on CPU with tiny settings (the tests)

Checks, in order, each recorded with its outcome:
1. a bf16-autocast pre-training step (RAW and HOG targets): finite loss and gradients, weights updated;
2. a process group of one (NCCL on CUDA, gloo on CPU) with DistributedDataParallel around the model: all-reduce and one step;
3. pre-training throughput and peak memory of ViT-S/16 at 224 px (the `paper` profile) and ViT-Ti/8 at 64 px (`gpu-rgb`), in the
   precision training picks on the device (`precision="auto"`: bf16 where it is native).
results/bench/gpu.json is written only from a CUDA device; on CPU pass --out.
"""

from __future__ import annotations
import argparse, json, os, socket, sys, time, traceback
from pathlib import Path

import torch
import torch.distributed as dist

from mimeo_nb.data import atomic_write_text
from mimeo_nb.model import MaskedAutoencoder
from mimeo_nb.study import device_name, git_state, repo_root
from mimeo_nb.bench import throughput
from mimeo_nb.train import param_groups, resolve_precision


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bf16_step(device: torch.device, target: str, batch: int) -> dict:
    "One bf16-autocast step of ViT-Ti/8 on random 13-band tiles: loss and gradients finite, weights moved."
    torch.manual_seed(0)
    m = MaskedAutoencoder(
        "vit_tiny_patch8_64", target, {"raw": "A", "hog": "C"}[target], in_chans=13, mask_ratio=0.7
    ).to(device)
    opt = torch.optim.AdamW(param_groups(m, 0.05), lr=1e-3)
    x = torch.rand(batch, 13, 64, 64, device=device)
    before = [p.detach().clone() for p in m.parameters()]
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        out = m(x)
    out["loss"].backward()
    grads_finite = all(torch.isfinite(p.grad).all().item() for p in m.parameters() if p.grad is not None)
    opt.step()
    moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, m.parameters()))
    ok = bool(torch.isfinite(out["loss"]).item() and grads_finite and moved > 0)
    return dict(
        ok=ok,
        loss=float(out["loss"].detach()),
        grads_finite=grads_finite,
        tensors_updated=moved,
        pred_dtypes={k: str(v.dtype) for k, v in out["pred"].items()},
    )


def process_group_of_one(device: torch.device, batch: int) -> dict:
    "A process group of one (NCCL on CUDA, gloo on CPU), an all-reduce, and one DDP step in bf16 autocast."
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        t = torch.arange(4.0, device=device)
        dist.all_reduce(t)
        m = MaskedAutoencoder("vit_tiny_patch8_64", "raw", "A", in_chans=13, mask_ratio=0.7).to(device)
        net = torch.nn.parallel.DistributedDataParallel(
            m, device_ids=[device.index or 0] if device.type == "cuda" else None
        )
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = net(torch.rand(batch, 13, 64, 64, device=device))["loss"]
        loss.backward()
        ok = bool(torch.equal(t.cpu(), torch.arange(4.0)) and torch.isfinite(loss).item())
        return dict(ok=ok, backend=backend, all_reduce=t.cpu().tolist(), loss=float(loss))
    finally:
        dist.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="tiny batches and few steps (checks that everything runs; numbers mean nothing)",
    )
    p.add_argument("--out", default="", help="JSON file to write (default results/bench/gpu.json, CUDA only)")
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu_check: --device cuda but CUDA is not available here; use --device cpu --tiny --out FILE to check the code paths",
            file=sys.stderr,
        )
        return 2
    device = torch.device(a.device)
    if not a.out and device.type != "cuda":
        print(
            "gpu_check: results/bench/gpu.json comes only from a CUDA device; on CPU pass --out FILE", file=sys.stderr
        )
        return 2
    out = Path(a.out) if a.out else (repo_root() or Path.cwd()) / "results" / "bench" / "gpu.json"
    checks, t0 = {}, time.time()

    def run(name, fn, *args, **kw):
        try:
            checks[name] = fn(*args, **kw)
        except Exception as e:
            checks[name] = dict(ok=False, error=f"{type(e).__name__}: {e}", trace=traceback.format_exc()[-2000:])
        print(name, json.dumps({k: v for k, v in checks[name].items() if k != "trace"}), flush=True)

    small = 4 if a.tiny else 64
    for target in ("raw", "hog"):
        run(f"bf16_step_{target}", bf16_step, device, target, small)
    run("process_group", process_group_of_one, device, small)
    # throughput in the precision training picks here (`precision="auto"`): bf16 where the device has it natively, else
    # fp32 (a CPU without native bf16 emulates it, ~30x slower on ViT-S/16); steps 1-2 check bf16 autocast on any device
    mode = "bf16" if resolve_precision("auto", device) == "bf16" else "fp32"
    rates = {}
    for preset, batch in (
        ("vit_small_patch16_224", 2 if a.tiny else 256),
        ("vit_tiny_patch8_64", 4 if a.tiny else 512),
    ):
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rates[preset] = throughput(
                preset,
                "raw",
                batch,
                mode,
                steps=1 if a.tiny else 20,
                warmup=1 if a.tiny else 5,
                device=str(device),
                in_chans=13,
                mask=0.75,
            )
        except Exception as e:
            rates[preset] = dict(error=f"{type(e).__name__}: {e}")
        print(preset, json.dumps(rates[preset]), flush=True)
    ok = all(c.get("ok") for c in checks.values()) and not any("error" in r for r in rates.values())
    record = dict(
        ok=ok,
        device=device_name(device),
        cuda=torch.version.cuda,
        torch=torch.__version__,
        tiny=a.tiny,
        mode=mode,
        checks=checks,
        throughput=rates,
        seconds=time.time() - t0,
        git=git_state(),
        date=time.strftime("%Y-%m-%d %H:%M"),
        gpu=(torch.cuda.get_device_properties(device).name if device.type == "cuda" else None),
    )
    atomic_write_text(out, json.dumps(record, indent=1))
    print(f"gpu_check: {'all checks passed' if ok else 'FAILED'}; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

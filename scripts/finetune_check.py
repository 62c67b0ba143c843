"""Fine-tuning recipe checks on EuroSAT RGB with the committed encoders: one run per call, its traces to a JSON file.

    python scripts/finetune_check.py NAME --encoder raw|hog|random --fraction 0.1 --epochs 3 [--test] [--set field=value ...]

Selection runs (no --test) score validation tiles only; --test predicts the test split once, for the chosen recipe.
Checkpoints go to $MIMEO_CHECKPOINTS (default ~/.cache/mimeo_nb/finetune-checks): a rerun resumes from the last epoch.
"""
import argparse, json, os, time
from pathlib import Path

import numpy as np
import torch

from mimeo_nb.config import make_config, parse_field, repo_root
from mimeo_nb.data import atomic_write_text, label_fraction, load_eurosat
from mimeo_nb.evaluate import cached_features, finetune, FeatureCache
from mimeo_nb.model import load_encoder
from mimeo_nb.train import PretrainData, make_split, model_from_config

ENCODERS = dict(raw="results/runs-rgb/raw-A-m0.7-pretrain-cc3ea5f06b", hog="results/runs-rgb/hog-C-m0.7-pretrain-58d538ed51")

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("name", help="the check's name: results/recipes/<name>.json")
ap.add_argument("--encoder", choices=["raw", "hog", "random"], default="raw", help="committed 10-epoch encoder or random")
ap.add_argument("--fraction", type=float, default=0.1, help="label fraction")
ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
ap.add_argument("--test", action="store_true", help="predict the test split once (the chosen recipe only)")
ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="Config fields")
a = ap.parse_args()

root = repo_root()
sets = dict(s.split("=", 1) for s in a.set)
cfg = make_config("cpu-rgb", ft_epochs=a.epochs, ft_epoch_scaling="none", evaluations=["finetune"],
                  init="random" if a.encoder == "random" else "pretrained",
                  **{k: parse_field(k, v) for k, v in sets.items()})
tiles = load_eurosat(os.environ.get("MIMEO_EUROSAT_RGB", root.parent / "shared/data/eurosat-rgb"), progress=False)
split = make_split(tiles, cfg)
normalize = PretrainData(cfg, tiles).normalize
if a.encoder == "random":
    torch.manual_seed(cfg.seed)
    state = model_from_config(cfg, 3).encoder.state_dict()

    def make():
        e = model_from_config(cfg, 3).encoder
        e.load_state_dict(state)
        return e
    key = f"random-{cfg.preset}-{cfg.seed}"
else:
    enc = root / ENCODERS[a.encoder] / "encoder.safetensors"

    def make():
        return load_encoder(enc)
    key = f"{ENCODERS[a.encoder]}"
ck = Path(os.environ.get("MIMEO_CHECKPOINTS", "~/.cache/mimeo_nb/finetune-checks")).expanduser()
train, test = split["train"], split["test"]
labelled = label_fraction(train, tiles.labels, a.fraction, seed=cfg.seed, method=cfg.fraction_method)
feats = cached_features(make, key, tiles, np.union1d(train, test), normalize, cfg, FeatureCache(ck / "features"),
                        torch.device("cpu"), False)
t0 = time.time()
r = finetune(make, tiles, labelled, test if a.test else [], normalize, cfg, cfg.seed, "cpu", True, a.fraction, feats,
             ckpt_dir=ck, resume_key=key)
out = dict(name=a.name, encoder=a.encoder, fraction=a.fraction, epochs=a.epochs, set=sets, n_labelled=len(labelled),
           seconds=time.time() - t0, **{k: r[k] for k in ("lr", "epoch", "n_fit", "n_val", "val_accuracy",
                                                           "probe_val_accuracy", "final_train_loss", "trials")})
if a.test:
    out["test_accuracy"] = float((r["probs"].argmax(1) == tiles.labels[test]).mean())
    out["n_test"] = len(test)
dest = root / "results/recipes" / f"{a.name}.json"
dest.parent.mkdir(parents=True, exist_ok=True)
atomic_write_text(dest, json.dumps(out, indent=1))
t = r["trials"][0]
print(f"{a.name}: loss0 {t['loss0']:.3f}, val per epoch {[round(v, 4) for v in t['val_accuracy']]}, "
      f"probe val {r['probe_val_accuracy']}, test {out.get('test_accuracy')}, {out['seconds']:.0f} s", flush=True)

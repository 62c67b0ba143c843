"""The fine-tuning recipe checks in order (each skipped when its JSON exists): choose the pre-trained recipe on validation
tiles, then fine-tune the committed RAW encoder at 100 % for 10 epochs with it and predict the test split once."""
import json, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
out = root / "results/recipes"
SEL = ["--fraction", "0.2", "--epochs", "2"]  # 3,240 training and 1,080 validation tiles (ft_val=0.25)
CANDIDATES = {
    "sel-ln-ld0.9-wd0.05": ["ft_head=ln", "ft_layer_decay=0.9", "ft_wd=0.05"],
    "sel-ln-ld0.75-wd0.05": ["ft_head=ln", "ft_layer_decay=0.75", "ft_wd=0.05"],
    "sel-ln-ld1-wd0.05": ["ft_head=ln", "ft_layer_decay=1.0", "ft_wd=0.05"],
    "sel-ln-ld0.9-wd0.001": ["ft_head=ln", "ft_layer_decay=0.9", "ft_wd=0.001"],
    "sel-bn-ld0.9-wd0.05": ["ft_head=bn", "ft_layer_decay=0.9", "ft_wd=0.05"],
    "sel-bnprobe-ld0.9-wd0.05": ["ft_head=bn", "ft_head_init=probe", "ft_layer_decay=0.9", "ft_wd=0.05"],
}


def run(name, args, sets):
    if (out / f"{name}.json").is_file():
        return json.loads((out / f"{name}.json").read_text())
    subprocess.run([sys.executable, str(root / "scripts/finetune_check.py"), name, *args, "--set", *sets], check=True)
    return json.loads((out / f"{name}.json").read_text())


scores = {n: run(n, ["--encoder", "raw", *SEL], s + ["ft_val=0.25"])["val_accuracy"] for n, s in CANDIDATES.items()}
best = max(scores, key=scores.get)
print("validation accuracy:", scores, "->", best, flush=True)
run("raw-f1-e10", ["--encoder", "raw", "--fraction", "1", "--epochs", "10", "--test"], CANDIDATES[best])

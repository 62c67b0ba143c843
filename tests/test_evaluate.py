"""Evaluation on the real sample with a briefly pre-trained tiny encoder: no choice reads the test labels; the converged probe.

The features, probes, fine-tuning, metrics, results files and bad input are checked in nbs/05_evaluate.ipynb."""

import numpy as np
import pytest

from mimeo_nb.config import make_config
from mimeo_nb.data import load_eurosat
from mimeo_nb.evaluate import encoder_features, evaluate_encoder, knn_predict
from mimeo_nb.train import PretrainData, make_split, model_from_config, pretrain


@pytest.fixture(scope="module")
def setup(ms_sample):
    tiles = load_eurosat(ms_sample, progress=False)
    cfg = make_config(
        "smoke",
        max_tiles=0,
        epochs=3,
        batch_size=32,
        device="cpu",
        target="hog",
        variant="C",
        precision="fp32",
        fractions=[1.0, 0.5, 0.1, 0.01],
        evaluations=["linear", "knn"],
        probe_epochs=30,
    )
    data = PretrainData(cfg, tiles)
    res = pretrain(cfg, None, data, progress=False)
    return tiles, cfg, data, make_split(tiles, cfg), res.model.encoder


def test_choices_never_read_the_test_labels(setup):
    """Poison the test labels: every hyper-parameter choice (probe weight decay, fine-tuning lr and epoch) stays the same."""
    import copy

    tiles, cfg, data, split, enc = setup
    c = cfg.replace(
        evaluations=["linear", "finetune"],
        fractions=[0.5],
        ft_epochs=2,
        ft_batch=16,
        ft_recipe="mae",
        ft_val=0.2,
        ft_lrs=[1e-4, 1e-3],
        ft_head_init="probe",
    )
    poisoned = copy.copy(tiles)
    poisoned.labels = tiles.labels.copy()
    test = split["test"]
    poisoned.labels[test] = np.random.default_rng(0).permutation(poisoned.labels[test])
    state = {k: v.clone() for k, v in enc.state_dict().items()}

    def make():
        m = model_from_config(cfg, 13).encoder
        m.load_state_dict(state)
        return m

    choices = []
    for t in (tiles, poisoned):
        recs, preds = evaluate_encoder(make, "poison", t, split, data.normalize, c, progress=False)
        by = {r["strategy"]: r for r in recs}
        choices.append(
            (
                by["linear"]["probe"]["wd"],
                by["linear"]["probe"]["cv_accuracy"],
                by["finetune"]["lr"],
                by["finetune"]["epoch"],
                [p[3].argmax(1).tolist() for p in preds],
            )
        )
    assert choices[0] == choices[1]


def test_converged_probe_matches_sklearn_and_knn_on_real_features(setup):
    from sklearn.linear_model import LogisticRegression

    from mimeo_nb.evaluate import logistic_probe, standardiser

    tiles, cfg, data, split, enc = setup
    rnd = model_from_config(cfg.replace(init="random"), 13).encoder
    for e in (enc, rnd):
        tr = encoder_features(e, tiles, split["train"], data.normalize)
        te = encoder_features(e, tiles, split["test"], data.normalize)
        ytr, yte = tiles.labels[split["train"]], tiles.labels[split["test"]]
        probs, info = logistic_probe(tr, ytr, te, 10)
        zs = standardiser(tr)
        sk = LogisticRegression(C=1 / (info["wd"] * len(ytr)), max_iter=5000).fit(zs(tr).numpy(), ytr)
        ours, theirs = (probs.argmax(1) == yte).mean(), (sk.predict(zs(te).numpy()) == yte).mean()
        assert abs(ours - theirs) <= 0.02, (ours, theirs)
        knn = (knn_predict(tr, ytr, te, 10).argmax(1) == yte).mean()
        assert ours >= knn - 1 / len(yte), (
            ours,
            knn,
        )  # a converged linear probe does not lose to k-NN on the same features
        assert info["train_loss"] < 1.0 and info["iterations"] > 1

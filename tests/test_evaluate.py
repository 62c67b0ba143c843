"""Evaluation on the real sample with a briefly pre-trained tiny encoder; metrics against sklearn; bad input."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from mimeo_nb.config import make_config
from mimeo_nb.data import label_fraction, load_eurosat
from mimeo_nb.evaluate import (
    FeatureCache,
    classification_metrics,
    encoder_features,
    evaluate_encoder,
    finetune,
    knn_predict,
    linear_probe,
    write_results,
)
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


def test_probe_and_knn_beat_chance(setup, tmp_path):
    tiles, cfg, data, split, enc = setup
    recs, preds = evaluate_encoder(
        lambda: enc, "t", tiles, split, data.normalize, cfg, FeatureCache(tmp_path), progress=False
    )
    by = {(r["strategy"], r["fraction"]): r for r in recs}
    assert by[("linear", 1.0)]["accuracy"] > 0.4 and by[("knn", 1.0)]["accuracy"] > 0.3  # chance: 0.1
    # fractions give the expected numbers of labels
    for f in cfg.fractions:
        assert by[("linear", f)]["n_train"] == len(label_fraction(split["train"], tiles.labels, f))
    assert by[("linear", 0.01)]["n_train"] == 10  # one per class
    assert len(list(tmp_path.glob("features-*.pt"))) == 1  # encoder run once for all fractions and strategies
    write_results(tmp_path, recs, preds, tiles, split["test"])
    import pandas as pd

    p = pd.read_csv(tmp_path / "predictions.csv")
    assert len(p) == len(split["test"]) * len(recs) and set(p.true) <= set(tiles.classes)
    first = p[(p.strategy == "linear") & (p.fraction == 1.0)]
    assert np.isclose((first.true == first.predicted).mean(), by[("linear", 1.0)]["accuracy"])
    assert json.loads((tmp_path / "metrics.json").read_text())[0]["strategy"] == "linear"
    big = write_results(
        tmp_path / "big", recs, preds, tiles, split["test"], gzip_rows=10
    )  # large tables are gzipped, same content
    assert big.name == "predictions.csv.gz" and pd.read_csv(big).equals(p)


def test_feature_cache_and_pooling(setup):
    tiles, cfg, data, split, enc = setup
    f_cls = encoder_features(enc, tiles, split["test"][:8], data.normalize, "cls", batch=3)
    f_mean = encoder_features(enc, tiles, split["test"][:8], data.normalize, "mean", batch=8)
    assert f_cls.shape == f_mean.shape == (8, enc.embed_dim) and not torch.allclose(f_cls, f_mean)
    with torch.no_grad():
        x = data.normalize(torch.from_numpy(np.asarray(tiles.images[split["test"][:8]])))
        torch.testing.assert_close(f_cls, enc.eval()(x), atol=1e-5, rtol=1e-5)  # == timm's pooled output


def test_finetune_chooses_epoch_and_lr_on_validation(setup):
    tiles, cfg, data, split, enc = setup
    state = {k: v.clone() for k, v in enc.state_dict().items()}

    def make():
        m = model_from_config(cfg, 13).encoder
        m.load_state_dict(state)
        return m

    c = cfg.replace(ft_epochs=2, ft_batch=16, ft_recipe="mae", ft_val=0.25, ft_lrs=[1e-4, 1e-3])
    r = finetune(make, tiles, split["train"][:64], split["test"], data.normalize, c, seed=0)
    assert r["probs"].shape == (len(split["test"]), 10) and np.isfinite(r["probs"]).all()
    assert (r["n_fit"], r["n_val"]) == (48, 16) and [t["lr"] for t in r["trials"]] == [1e-4, 1e-3]
    best = max(r["trials"], key=lambda t: max(t["val_accuracy"]))
    assert r["lr"] == best["lr"] and r["epoch"] == 1 + int(np.argmax(best["val_accuracy"]))
    assert all(len(t["val_accuracy"]) == 2 for t in r["trials"])


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


def test_metrics_equal_sklearn():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y, p = rng.integers(0, 10, 200), rng.integers(0, 10, 200)
        p[:120] = y[:120]
        m = classification_metrics(y, p, [str(i) for i in range(10)])
        assert np.isclose(m["accuracy"], accuracy_score(y, p)) and np.isclose(
            m["macro_f1"], f1_score(y, p, average="macro")
        )
        cm = confusion_matrix(y, p, labels=range(10))
        assert (np.array(m["confusion"]) == cm).all()
        for i, (c, acc) in enumerate(m["per_class_accuracy"].items()):
            assert np.isclose(acc, cm[i, i] / cm[i].sum())
    m = classification_metrics([0, 0, 1], [0, 1, 1], ["a", "b", "c"])  # a class absent from the test set
    assert m["per_class_accuracy"]["c"] is None and np.isclose(
        m["macro_f1"], f1_score([0, 0, 1], [0, 1, 1], average="macro")
    )


def test_bad_inputs(setup):
    tiles, cfg, data, split, enc = setup
    with pytest.raises(ValueError, match="fraction=0"):
        evaluate_encoder(
            lambda: enc,
            "t",
            tiles,
            split,
            data.normalize,
            cfg.__class__(**{**cfg.to_dict(), "fractions": [0]}),
            progress=False,
        )
    with pytest.raises(ValueError, match="fraction=1.5"):
        label_fraction(split["train"], tiles.labels, 1.5)
    with pytest.raises(ValueError, match=r"leaves class\(es\)"):
        label_fraction(split["train"], tiles.labels, 0.01, method="study")
    with pytest.raises(ValueError, match="100 features, 99 labels"):
        linear_probe(np.zeros((100, 4)), np.zeros(99), np.zeros((5, 4)), 2)
    with pytest.raises(ValueError, match="100 features, 99 labels"):
        knn_predict(np.zeros((100, 4)), np.zeros(99), np.zeros((5, 4)), 2)
    three = model_from_config(cfg, 3).encoder
    with pytest.raises(ValueError, match="encoder takes 3 bands but the data has 13"):
        evaluate_encoder(lambda: three, "t", tiles, split, data.normalize, cfg, progress=False)
    with pytest.raises(ValueError, match="y_true has 3 labels but y_pred 2"):
        classification_metrics([0, 1, 1], [0, 1], ["a", "b"])

import joblib
import numpy as np
import pytest

from modelwarden.sandbox import datagen
from modelwarden.serving.model import load_runner


def test_same_seed_same_rows():
    assert (datagen.classification(50, seed=4)[0] == datagen.classification(50, seed=4)[0]).all()
    assert not (datagen.classification(50, seed=4)[0] == datagen.classification(50, seed=5)[0]).all()


def test_shift_moves_only_the_chosen_feature_by_k_std():
    clean = datagen.features(20_000, seed=1)
    drifted = datagen.features(20_000, seed=1, drift=datagen.Drift(shift={"amount": 2.0}))
    _, _, std, _ = datagen.FEATURES[0]
    assert (drifted[:, 0] - clean[:, 0]).mean() == pytest.approx(2.0 * std)
    assert (drifted[:, 1:] == clean[:, 1:]).all()


def test_label_noise_lowers_the_example_classifier_accuracy(examples):
    model = joblib.load(examples["classifier"].model)
    clean_x, clean_y = datagen.classification(4000, seed=11)
    noisy_x, noisy_y = datagen.classification(4000, seed=11, drift=datagen.Drift(label_noise=0.3))
    clean_accuracy = (model.predict(clean_x) == clean_y).mean()
    noisy_accuracy = (model.predict(noisy_x) == noisy_y).mean()
    assert clean_accuracy > 0.8 and noisy_accuracy < clean_accuracy - 0.15


def test_regression_label_noise_raises_error(examples):
    runner, _ = load_runner(str(examples["regressor"].directory))
    x, y = datagen.regression(3000, seed=2)
    _, noisy = datagen.regression(3000, seed=2, drift=datagen.Drift(label_noise=0.5))
    predicted = runner.predict(x).predicted
    assert np.abs(predicted - noisy).mean() > 3 * np.abs(predicted - y).mean()


def test_unknown_drift_feature_is_rejected():
    with pytest.raises(ValueError, match="unknown feature"):
        datagen.Drift(shift={"nope": 1.0})

import argparse
import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from modelwarden.sandbox import datagen
from modelwarden.contract.metrics import level_key
from modelwarden.contract.profile import Distribution, Profile
from modelwarden.serving.profile import build_profile_from_csv, categorical_distribution, numeric_distribution, prediction_profile, ProfileError
from modelwarden.commands.profile import configure, run


def test_numeric_edges_are_finite_increasing_and_counts_match_searchsorted():
    x = np.random.default_rng(1).normal(5, 2, 3001)
    d = numeric_distribution("f", x, bins=20)
    edges = np.array(d.edges)
    assert len(edges) == 19 + 2 and np.isfinite(edges).all() and (np.diff(edges) > 0).all()  # + the two tail edges
    assert d.counts == np.bincount(np.searchsorted(edges, x, side="left"), minlength=22).tolist()
    assert sum(d.counts) == d.count == 3001
    assert d.mean == pytest.approx(x.mean()) and d.std == pytest.approx(x.std())
    # quantile buckets hold about n/bins each; the tail buckets about 0.5 % each
    inner = d.counts[2:-2]
    assert max(inner) - min(inner) <= 0.02 * 3001
    assert 10 <= d.counts[0] <= 20 and 10 <= d.counts[-1] <= 20  # 0.5 % of 3001 is 15


def test_tail_edges_make_a_move_in_the_top_two_percent_visible():
    """Without the 0.5 %/99.5 % edges the top bucket is open-ended above the 95 % quantile: the
    top 2 % moved by 3σ leave every count as it was."""
    x = np.random.default_rng(2).normal(size=20_000)
    d = numeric_distribution("f", x, bins=20)
    moved = x.copy()
    moved[moved > np.quantile(moved, 0.98)] += 3.0
    before = np.bincount(np.searchsorted(d.edges, x, side="left"), minlength=len(d.counts))
    after = np.bincount(np.searchsorted(d.edges, moved, side="left"), minlength=len(d.counts))
    assert after[-1] > 3 * before[-1]
    without_tails = np.array(d.edges[1:-1])
    assert (np.bincount(np.searchsorted(without_tails, x, side="left"), minlength=20)
            == np.bincount(np.searchsorted(without_tails, moved, side="left"), minlength=20)).all()


def test_small_data_gets_no_tail_edges():
    """Below 2000 rows a tail bucket would hold fewer than 10 training values: its share would be guessed."""
    x = np.random.default_rng(3).normal(size=1999)
    assert len(numeric_distribution("f", x, bins=20).edges) == 19
    assert len(numeric_distribution("f", np.append(x, 0.0), bins=20).edges) == 21


def test_tied_values_give_deduplicated_edges():
    x = np.repeat([0.0, 1.0, 2.0, 3.0], [700, 100, 100, 100])
    d = numeric_distribution("ties", x, bins=20)
    assert d.edges == sorted(set(d.edges)) and set(d.edges) <= {0.0, 1.0, 2.0, 3.0}
    assert sum(d.counts) == 1000 and d.counts[0] == 700


def test_constant_column_has_one_edge_and_zero_std():
    d = numeric_distribution("c", [4.5] * 10, bins=10)
    assert d.edges == [4.5] and d.counts == [10, 0] and d.std == 0.0


def test_edges_are_rounded_to_short_stable_strings():
    d = numeric_distribution("f", np.linspace(0, 1, 1001) / 3, bins=4)
    assert all(len(repr(edge)) <= 10 for edge in d.edges)
    assert all(edge == float(repr(edge)) for edge in d.edges)


@pytest.mark.parametrize("values", [[], [1.0, math.nan], [1.0, math.inf]])
def test_bad_numeric_columns_are_errors(values):
    with pytest.raises(ProfileError):
        numeric_distribution("bad", values)


def test_categorical_levels_are_sorted_and_code_to_edges():
    d = categorical_distribution("colour", ["red", "blue", "red", "green", "red"])
    assert d.levels == ["blue", "green", "red"]
    assert d.edges == [0.0, 1.0, 2.0] and d.counts == [1, 1, 3, 0]


def test_level_key_makes_equal_labels_agree():
    assert level_key(1) == level_key(1.0) == level_key("1") == level_key(np.int64(1)) == "1"
    assert level_key(0.25) == "0.25" and level_key(True) == "true"


def test_inconsistent_distribution_is_rejected():
    with pytest.raises(ValidationError):
        Distribution(name="f", kind="numeric", edges=[1.0, 0.5], counts=[1, 1, 1], count=3)
    with pytest.raises(ValidationError):
        Distribution(name="f", kind="numeric", edges=[1.0], counts=[1, 1], count=3)
    with pytest.raises(ValidationError):
        Distribution(name="f", kind="numeric", edges=[math.inf], counts=[1, 1], count=2)


def test_classification_prediction_profile_lists_unpredicted_classes():
    p = prediction_profile("classification", "model", [0, 0, 1], classes=[0, 1, 2], scores=np.array([0.9, 0.8, 0.7]))
    assert p.levels == ["0", "1", "2"] and p.counts == [2, 1, 0, 0]
    assert p.value_distribution() is p.score and p.score.count == 3


def test_profile_from_csv_with_model(examples, classifier_profile):
    assert classifier_profile.feature_names == list(datagen.FEATURE_NAMES)
    assert classifier_profile.prediction.source == "model"
    assert classifier_profile.prediction.positive_class == "1"
    assert classifier_profile.prediction.score.count == classifier_profile.rows == 5000
    for feature in classifier_profile.features:
        assert sum(feature.counts) == 5000 and len(feature.counts) == len(feature.edges) + 1


def test_regressor_profile_describes_predictions(regressor_profile):
    prediction = regressor_profile.prediction
    assert (
        prediction.task == "regression"
        and prediction.kind == "numeric"
        and prediction.value_distribution() is prediction
    )
    assert 40 < prediction.mean < 60


def test_profile_without_model_uses_target(examples):
    profile = build_profile_from_csv(examples["classifier"].data, "label", bins=10)
    assert profile.prediction.source == "target" and profile.prediction.task == "classification"
    assert profile.prediction.levels == ["0", "1"] and profile.prediction.score is None
    assert all(len(f.edges) == 9 + 2 * (profile.rows >= 2000) for f in profile.features)


def test_json_round_trip_is_self_describing(classifier_profile):
    doc = json.loads(classifier_profile.to_json())
    assert doc["formatVersion"] == 1 and doc["zScore"] == 3.0
    assert {"name", "kind", "edges", "counts", "mean", "std"} <= set(doc["features"][0])
    assert doc["prediction"]["scoreMeaning"] == "probability of class 1"
    assert Profile.from_json(classifier_profile.to_json()) == classifier_profile


def test_cli_profiles_categorical_text_columns(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("size,colour,y\n1.5,red,0\n2.5,blue,1\n3.5,red,1\n")
    parser = argparse.ArgumentParser()
    configure(parser)
    assert (
        run(
            parser.parse_args(
                [
                    "--data",
                    str(data),
                    "--target",
                    "y",
                    "--categorical",
                    "colour",
                    "--bins",
                    "2",
                    "-o",
                    str(tmp_path / "p.json"),
                ]
            )
        )
        == 0
    )
    profile = Profile.from_json((tmp_path / "p.json").read_text())
    assert [f.kind for f in profile.features] == ["numeric", "categorical"]
    assert profile.features[1].levels == ["blue", "red"] and profile.features[1].counts == [1, 2, 0]


def test_cli_reports_a_non_numeric_column_in_one_line(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("size,colour,y\n1.5,red,0\n")
    parser = argparse.ArgumentParser()
    configure(parser)
    assert run(parser.parse_args(["--data", str(data), "--target", "y"])) == 1
    err = capsys.readouterr().err.strip()
    assert "'colour'" in err and "--categorical" in err and "\n" not in err


def _untrusted_skops_model(tmp_path):
    """A skops model needing a type skops does not trust by default (_operator.neg), and its CSV."""
    import operator

    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] > 0).astype(int)
    data = tmp_path / "train.csv"
    data.write_text("a,b,y\n" + "".join(f"{float(a)!r},{float(b)!r},{label}\n" for (a, b), label in zip(x, y)))
    model = tmp_path / "model.skops"
    skops.io.dump(make_pipeline(FunctionTransformer(operator.neg), LogisticRegression()).fit(x, y), model)
    return data, model


def test_cli_trust_skops_types_lets_a_skops_model_be_profiled(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MODEL_SKOPS_TRUSTED", raising=False)
    data, model = _untrusted_skops_model(tmp_path)
    common = ["--data", str(data), "--target", "y", "--model", str(model), "--bins", "4"]
    parser = argparse.ArgumentParser()
    configure(parser)
    assert run(parser.parse_args(common)) == 1
    assert "pass --trust-skops-types _operator.neg" in capsys.readouterr().err

    assert run(parser.parse_args([*common, "--trust-skops-types", " _operator.neg ,", "-o", str(tmp_path / "p.json")])) == 0
    assert Profile.from_json((tmp_path / "p.json").read_text()).prediction.source == "model"

    monkeypatch.setenv("MODEL_SKOPS_TRUSTED", "_operator.neg")  # the default, as for `modelwarden serve`
    from_env = argparse.ArgumentParser()
    configure(from_env)
    assert run(from_env.parse_args([*common, "-o", str(tmp_path / "q.json")])) == 0

"""Example models trained once per session into a temp dir (no binaries in the repository)."""

from __future__ import annotations

import pytest

from modelwarden.sandbox.examples import ExampleModel, train_examples
from modelwarden.contract.profile import Profile


@pytest.fixture(scope="session")
def examples(tmp_path_factory) -> dict[str, ExampleModel]:
    return train_examples(tmp_path_factory.mktemp("serving-examples"))


@pytest.fixture(scope="session")
def classifier_profile(examples) -> Profile:
    return Profile.from_json(examples["classifier"].profile.read_text())


@pytest.fixture(scope="session")
def regressor_profile(examples) -> Profile:
    return Profile.from_json(examples["regressor"].profile.read_text())

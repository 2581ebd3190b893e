"""`DROVER_PARAM_<NAME>` variables set a pipeline's parameters at launch, without editing it."""
import pytest

import seed_pipeline
from drover import settings


def test_a_variable_sets_a_declared_parameter_as_an_override(monkeypatch):
    monkeypatch.setenv("DROVER_PARAM_url", "/data/other.pkl")
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    body = pipe._submit_message()["body"]
    assert body["params"] == {"url": "/data/other.pkl"}
    # The spec keeps its default, so a later rerun can change the value again.
    assert body["spec"]["parameters"]["url"]["default"] == "/tmp/iris.pkl"
    assert pipe.get_parameters()["url"] == "/data/other.pkl"


def test_the_name_may_be_in_any_case(monkeypatch):
    monkeypatch.setenv("DROVER_PARAM_URL", "s3://bucket/iris.pkl")
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    assert pipe._submit_message()["body"]["params"] == {"url": "s3://bucket/iris.pkl"}


def test_an_undeclared_name_is_ignored_with_a_warning(monkeypatch):
    monkeypatch.setenv("DROVER_PARAM_rows", "5")
    pipe = seed_pipeline.build("/tmp/iris.pkl")
    with pytest.warns(UserWarning, match=r"DROVER_PARAM_rows is not a parameter of this pipeline \(declared: url\)"):
        body = pipe._submit_message()["body"]
    assert body["params"] == {}


def test_without_variables_nothing_is_overridden(monkeypatch):
    for var in [v for v in __import__("os").environ if v.startswith("DROVER_PARAM_")]:
        monkeypatch.delenv(var)
    assert seed_pipeline.build("/tmp/iris.pkl")._submit_message()["body"]["params"] == {}


def test_two_declared_names_differing_in_case_need_the_exact_name():
    declared = ["lr", "LR"]
    assert settings.param_overrides(declared, {"DROVER_PARAM_LR": "1"}) == {"LR": "1"}
    with pytest.warns(UserWarning, match="ambiguous"):
        assert settings.param_overrides(declared, {"DROVER_PARAM_Lr": "1"}) == {}

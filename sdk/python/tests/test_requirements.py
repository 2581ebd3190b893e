"""Requirements: detected from imports and pinned, overridden by packages=, inherited by consumers."""
import importlib.metadata

import pytest

from drover import PipelineController, requirements

SKLEARN = f"scikit-learn=={importlib.metadata.version('scikit-learn')}"
PANDAS = f"pandas=={importlib.metadata.version('pandas')}"


def test_imports_map_to_pinned_distributions():
    source = (
        "import os, json\nimport sklearn.linear_model\nfrom pandas import DataFrame\n"
        "from drover import StorageManager\nfrom . import sibling\nimport pickle as p\n"
    )
    assert requirements.detect(source, "s") == [PANDAS, SKLEARN]


def test_a_module_not_installed_is_kept_bare_with_a_warning():
    with pytest.warns(UserWarning, match="not installed"):
        assert requirements.detect("import surely_not_installed_xyz\n", "s") == ["surely_not_installed_xyz"]


def test_requirement_file_and_list(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# pinned\npandas==2.3.3  # data frames\n\nnumpy>=1\n")
    assert requirements.from_argument(str(path), "s") == ["pandas==2.3.3", "numpy>=1"]
    assert requirements.from_argument(["a==1", " b "], "s") == ["a==1", "b"]
    with pytest.raises(ValueError, match="pip option"):
        requirements.from_argument(["--index-url x"], "s")
    with pytest.raises(ValueError, match="not a requirements file"):
        requirements.from_argument(str(tmp_path / "missing.txt"), "s")
    for bad in ["./local/pkg", "https://evil.example/x.whl", "pandas --pre"]:
        with pytest.raises(ValueError, match="PEP 508"):
            requirements.from_argument([bad], "s")


def test_the_pep_508_check_names_the_problem():
    assert requirements.problem("pandas[sql]>=2; python_version >= '3.9'") is None
    assert requirements.problem("pip @ https://example.org/pip.zip") is None
    assert "installer options" in (requirements.problem("--index-url=x") or "")
    assert '"--pre"' in (requirements.problem("pandas --pre") or "")
    assert "printable ASCII" in (requirements.problem("pandas\n-r x") or "")


def test_merge_keeps_own_pins_and_sorts():
    merged = requirements.merge(["Scikit_Learn==1.0"], ["scikit-learn==9", "pandas==2"], "s")
    assert merged == ["pandas==2", "Scikit_Learn==1.0"]


def make_frame():
    import pandas

    return pandas.DataFrame({"a": [1]})


def count(frame, path):
    return len(frame)


def test_consumers_inherit_their_producers_requirements():
    pipe = PipelineController(name="p", project="x", version="1")
    pipe.add_function_step(name="make", function=make_frame, function_return=["frame"])
    pipe.add_function_step(name="count", function=count, function_return=["n"],
                           function_kwargs=dict(frame="${make.frame}", path="/x"),
                           packages=["numpy==1.0"])
    pipe.add_function_step(name="after", function=count, parents=["count"],
                           function_kwargs=dict(frame=1, path="file at ${count.n}"))
    make, counted, after = pipe._submit_message()["body"]["spec"]["step"]
    assert make["function"]["requirements"] == [PANDAS]
    assert counted["function"]["requirements"] == ["numpy==1.0", PANDAS]
    assert after["function"]["requirements"] == ["numpy==1.0", PANDAS]


def test_a_step_without_references_inherits_nothing():
    pipe = PipelineController(name="p", project="x", version="1")
    pipe.add_function_step(name="make", function=make_frame, function_return=["frame"])
    pipe.add_function_step(name="count", function=count, parents=["make"],
                           function_kwargs=dict(frame=1, path="x"))
    assert pipe._submit_message()["body"]["spec"]["step"][1]["function"]["requirements"] == []

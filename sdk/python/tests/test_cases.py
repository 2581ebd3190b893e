"""The shared cases in protocol/tests/golden/cases/, which the controller's own tests run too
(protocol/tests/cases.rs): references, names and validation follow one contract."""
import json
import os

import pytest

from drover import names, refs, validate

CASES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "protocol", "tests", "golden", "cases")


def load(name):
    with open(os.path.join(CASES, name), encoding="utf-8") as f:
        return json.load(f)


def cases(file, key):
    found = load(file)[key]
    assert found, f"no cases under {key!r} in {file}"
    return found


def short(value):
    return repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."


def part_json(part):
    if isinstance(part, str):
        return {"text": part}
    if isinstance(part, refs.Param):
        return {"param": part.name}
    if isinstance(part, refs.StepId):
        return {"step": part.step, "id": True}
    if isinstance(part, refs.ArtifactUrl):
        return {"step": part.step, "artifact_url": part.artifact}
    return {"step": part.step, "output": part.output}


def value_of(values):
    def resolve(reference):
        key = f"pipeline.{reference.name}" if isinstance(reference, refs.Param) else reference.key
        return values.get(key)

    return resolve


@pytest.mark.parametrize("case", cases("refs.json", "parse"), ids=lambda c: short(c["input"]))
def test_parse(case):
    assert [part_json(p) for p in refs.parse(case["input"])] == case["parts"]


@pytest.mark.parametrize("case", cases("refs.json", "render"), ids=lambda c: short(c["input"]))
def test_render(case):
    assert refs.render(case["input"], value_of(case["values"])) == case["output"]


@pytest.mark.parametrize("case", cases("refs.json", "partial"), ids=lambda c: short(c["input"]))
def test_render_partial(case):
    assert refs.render_partial(case["input"], value_of(case["values"])) == case["output"]


@pytest.mark.parametrize("case", cases("refs.json", "whole"), ids=lambda c: short(c["input"]))
def test_whole_output(case):
    whole = refs.whole_output(case["input"])
    assert (None if whole is None else [whole.step, whole.output]) == case["output"]


CHECKS = {
    "step name": names.check_step_name,
    "output name": names.check_output_name,
    "queue name": names.check_queue_name,
    "namespace": names.check_namespace,
}


@pytest.mark.parametrize("case", cases("names.json", "cases"),
                         ids=lambda c: f"{c['kind']}={short(c['value'])}")
def test_names(case):
    check = CHECKS[case["kind"]]
    if case["valid"]:
        assert check(case["value"]) == case["value"]
    else:
        with pytest.raises(names.InvalidName) as e:
            check(case["value"])
        assert (e.value.kind, e.value.value) == (case["kind"], case["value"])


def canonical(errors):
    return sorted(json.dumps(e, sort_keys=True) for e in errors)


@pytest.mark.parametrize("case", cases("validate.json", "cases"), ids=lambda c: c["name"])
def test_validate(case):
    if "ok" in case:
        checked = validate.validate(case["spec"], case["overrides"])
        ok = case["ok"]
        assert checked.order == ok["order"]
        assert checked.parents == ok["parents"]
        assert {k: [list(i) for i in v] for k, v in checked.inputs.items()} == ok["inputs"]
    else:
        with pytest.raises(validate.SpecErrors) as e:
            validate.validate(case["spec"], case["overrides"])
        assert canonical(err.case() for err in e.value.errors) == canonical(case["errors"]), str(e.value)

"""The deployment kit is valid: Kubernetes manifests against the Kubernetes schemas that
kubernetes-validate ships, KEDA objects against deploy/tests/schemas, the compose file against
the Compose Specification schema that check-jsonschema ships, plus the cross-references no schema
sees (selectors, secrets, queues, grace periods). Nothing is downloaded at test time."""

import configparser
import copy
import json
import pathlib
import re
import shutil
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
K8S = DEPLOY / "k8s"
KEDA_SCHEMA = json.loads((DEPLOY / "tests" / "schemas" / "keda-v1alpha1.json").read_text())
# The oldest Kubernetes release still widely run, and the newest the validator knows.
K8S_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]


def manifests():
    """(file name, document) for every YAML document under deploy/k8s."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def by_kind(kind):
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def validate_k8s(doc, version):
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, KEDA_SCHEMA)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_matches_its_schema(version):
    docs = manifests()
    assert len(docs) >= 10, [d["kind"] for _, d in docs]
    for name, doc in docs:
        try:
            validate_k8s(doc, version)
        except Exception as e:  # noqa: BLE001 - name the culprit, whatever failed
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {e}")


def test_the_validators_reject_typos():
    """A check that cannot fail proves nothing: a misspelt field must be caught."""
    deployment = copy.deepcopy(by_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(deployment, K8S_VERSIONS[-1])
    scaled = copy.deepcopy(by_kind("ScaledObject")[0])
    scaled["spec"]["minReplicas"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(scaled, K8S_VERSIONS[-1])
    scaled = copy.deepcopy(by_kind("ScaledObject")[0])
    scaled["spec"]["triggers"][0]["metadata"]["mode"] = "QueueDepth"
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(scaled, K8S_VERSIONS[-1])


def agent_queues(deployment):
    """The queues an agent Deployment serves, in order, without their limits."""
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    return [q.split(":")[0] for q in env["DROVER_QUEUES"].split(",")]


def test_every_agent_deployment_scales_to_zero_on_its_first_queue():
    agents = {d["metadata"]["name"]: d for d in by_kind("Deployment") if "agent" in d["metadata"]["name"]}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind("ScaledObject")}
    assert set(agents) == set(scaled), "one ScaledObject per agent Deployment"
    auths = {a["metadata"]["name"]: a for a in by_kind("TriggerAuthentication")}
    for name, deployment in agents.items():
        spec = scaled[name]["spec"]
        assert spec["minReplicaCount"] == 0, f"{name} must scale to zero"
        queue = agent_queues(deployment)[0]
        rabbit = [t for t in spec["triggers"] if t["type"] == "rabbitmq"]
        assert len(rabbit) == 1, name
        assert rabbit[0]["metadata"]["queueName"] == queue
        assert rabbit[0]["metadata"]["mode"] == "QueueLength"
        api = [t for t in spec["triggers"] if t["type"] == "metrics-api"]
        assert len(api) == 1, name
        assert f'name=="{queue}"' in api[0]["metadata"]["valueLocation"]
        assert api[0]["metadata"]["valueLocation"].endswith(".active_steps")
        assert api[0]["metadata"]["url"].endswith(f"/api/v1/queues?queue={queue}")
        for trigger in spec["triggers"]:
            assert trigger["authenticationRef"]["name"] in auths


def test_secrets_and_config_maps_referenced_exist():
    secrets = {s["metadata"]["name"]: s for s in by_kind("Secret")}
    config_maps = {c["metadata"]["name"] for c in by_kind("ConfigMap")}
    checked = 0
    for _, doc in manifests():
        for ref in find(doc, "secretKeyRef"):
            assert ref["key"] in secrets[ref["name"]]["stringData"], ref
            checked += 1
        for ref in find(doc, "secretTargetRef"):
            for item in ref:
                assert item["key"] in secrets[item["name"]]["stringData"], item
                checked += 1
        for ref in find(doc, "configMap"):
            assert ref["name"] in config_maps, ref
            checked += 1
    assert checked >= 8, checked


def find(node, key):
    """Every value stored under `key` anywhere in a document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from find(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from find(item, key)


def test_controller_is_single_with_its_volume_and_service():
    [controller] = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "drover-controller"]
    spec = controller["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["template"]["spec"]["volumes"]}
    assert claims <= {p["metadata"]["name"] for p in by_kind("PersistentVolumeClaim")}
    labels = spec["template"]["metadata"]["labels"]
    [service] = by_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert "--http=0.0.0.0:8470" in args
    # A non-loopback controller needs the token (or it refuses to start).
    env = {e["name"] for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert "DROVER_TOKEN" in env


def test_agents_get_longer_to_stop_than_their_drain():
    config = yaml.safe_load((K8S / "config.yaml").read_text())["data"]["drover.toml"]
    drain = re.search(r'drain-timeout = "(\d+)m"', config)
    assert drain, config
    for deployment in by_kind("Deployment"):
        if "agent" in deployment["metadata"]["name"]:
            grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace > int(drain.group(1)) * 60, deployment["metadata"]["name"]


def tool(name):
    """A command installed beside this Python (scripts/python-env.sh), else on PATH."""
    exe = pathlib.Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    assert found, f"{name} is missing: run scripts/python-env.sh"
    return found


def check_jsonschema():
    return tool("check-jsonschema")


def test_compose_file_matches_the_compose_specification(tmp_path):
    validator = check_jsonschema()
    compose = DEPLOY / "compose.yaml"
    ok = subprocess.run([validator, "--builtin-schema", "vendor.compose-spec", str(compose)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = yaml.safe_load(compose.read_text())
    assert {"rabbitmq", "controller", "agent"} <= set(doc["services"])
    assert doc["services"]["agent"]["deploy"]["replicas"]
    # The same check fails on a misspelt key.
    broken = copy.deepcopy(doc)
    broken["services"]["agent"]["stop_grace_perod"] = "1m"
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(broken))
    failed = subprocess.run([validator, "--builtin-schema", "vendor.compose-spec", str(bad)],
                            capture_output=True, text=True)
    assert failed.returncode != 0 and "stop_grace_perod" in failed.stdout


def dockerfile_instructions():
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    return [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_is_multi_stage_with_a_small_non_root_runtime():
    steps = dockerfile_instructions()
    known = {"ARG", "FROM", "WORKDIR", "COPY", "RUN", "USER", "VOLUME", "ENV", "EXPOSE", "STOPSIGNAL",
             "ENTRYPOINT", "CMD"}
    assert {op for op, *_ in steps} <= known
    froms = [rest for op, rest in steps if op == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS build") and "slim" in froms[1]
    runtime = steps[[i for i, (op, _) in enumerate(steps) if op == "FROM"][1]:]
    copied = [rest for op, rest in runtime if op == "COPY"]
    assert copied == ["--from=build /out/drover /usr/local/bin/drover"], copied
    assert any(op == "USER" and rest.split(":")[0] not in ("root", "0") for op, rest in runtime)
    assert any(op == "RUN" and "python3" in rest for op, rest in runtime)
    entry = json.loads([rest for op, rest in runtime if op == "ENTRYPOINT"][0])
    assert entry[-1] == "/usr/local/bin/drover"
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert "target/" in ignored and ".venv/" in ignored


def test_systemd_units_run_drover_with_a_drain_window():
    units = DEPLOY / "systemd"
    agent = configparser.ConfigParser(strict=False, interpolation=None)
    agent.read(units / "drover-agent@.service")
    exec_start = agent["Service"]["ExecStart"]
    assert exec_start.startswith("/usr/local/bin/drover agent")
    # The queue comes from the instance name, through the environment so agent-%i.env can
    # override it (a --queue flag would win over every file).
    assert "--queue" not in exec_start
    assert "DROVER_QUEUES=%i" in agent["Service"]["Environment"].split()
    assert int(agent["Service"]["TimeoutStopSec"]) > 600
    assert agent["Service"]["KillSignal"] == "SIGTERM"
    # A cgroup per attempt needs the unit's subtree delegated to the agent.
    assert agent["Service"]["Delegate"] == "yes"
    controller = configparser.ConfigParser(strict=False, interpolation=None)
    controller.read(units / "drover-controller.service")
    assert controller["Service"]["ExecStart"].startswith("/usr/local/bin/drover controller")
    # The controller's connection budget is derived from its open-file limit.
    assert int(controller["Service"]["LimitNOFILE"]) >= 4096
    for unit in (agent, controller):
        assert unit["Install"]["WantedBy"] == "multi-user.target"
        assert "/etc/drover/drover.toml" in unit["Service"]["Environment"]


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path):
    hadolint = tool("hadolint")
    lint = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # It does lint: a root user and an unpinned pip install are reported.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm-slim\nUSER root\nRUN pip install uv\n")
    lint = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert lint.returncode != 0 and "DL3002" in lint.stdout and "DL3013" in lint.stdout, lint.stdout


def test_systemd_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in (DEPLOY / "systemd").glob("*.service"):
        # verify wants the binary to exist; everything else is checked as written.
        name = unit.name.replace("@.", "@default.")
        (tmp_path / name).write_text(unit.read_text().replace("/usr/local/bin/drover", "/bin/true"))
        out = subprocess.run([analyze, "verify", str(tmp_path / name)], capture_output=True, text=True)
        assert out.returncode == 0 and not out.stderr.strip(), f"{unit.name}: {out.stderr}"
    # A misspelt directive is reported.
    typo = tmp_path / "typo.service"
    typo.write_text("[Service]\nExecStart=/bin/true\nRestartSecs=2\n")
    out = subprocess.run([analyze, "verify", str(typo)], capture_output=True, text=True)
    assert "RestartSecs" in out.stderr, out.stderr

"""Task and TaskTypes: offline with no controller, and what a step's task does and refuses."""
import json
import os
import pickle
import warnings

import pytest

from drover import StorageManager
from drover.task import Task, TaskTypes, cast_override

# ClearML 2.1.12's Task.TaskTypes, name = value, in its order.
CLEARML_TASK_TYPES = ["training", "testing", "inference", "data_processing", "application", "monitor",
                      "controller", "optimizer", "service", "qc", "custom"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No step environment, no controller at DROVER_URL, offline files under tmp_path; a fresh
    process state (no current task, the offline warning not given yet)."""
    for name in ("DROVER_RUN_ID", "DROVER_STEP", "DROVER_ATTEMPT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DROVER_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("DROVER_OFFLINE_DIR", str(tmp_path / "offline"))
    monkeypatch.setattr(Task, "_main", None)
    monkeypatch.setattr(Task, "_warned_offline", False)
    return tmp_path / "offline"


@pytest.fixture
def in_step(monkeypatch):
    monkeypatch.setenv("DROVER_RUN_ID", "r1")
    monkeypatch.setenv("DROVER_STEP", "train")
    monkeypatch.setattr(Task, "_main", None)


def test_init_without_a_controller_warns_once_and_runs_offline(offline):
    assert Task.current_task() is None
    with pytest.warns(UserWarning) as caught:
        task = Task.init(project_name="examples", task_name="step 1", task_type=TaskTypes.data_processing)
    [warning] = caught
    text = str(warning.message)
    assert "Task 'step 1' runs offline" in text and "no drover controller is reachable at http://127.0.0.1:1" in text
    assert str(offline / task.id) in text
    assert Task.current_task() is task and task.name == "step 1" and len(task.id) == 32
    assert task.get_project_name() == "examples" and task.task_type is TaskTypes.data_processing
    assert Task.running_locally()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Task.init(project_name="examples", task_name="again") is task
        task.close()
        assert Task.current_task() is None
        second = Task.init(project_name="examples", task_name="second")
    assert second is not task and second.id != task.id


def test_a_reachable_controller_registers_the_script_and_connect_updates_it(offline, http_server, monkeypatch,
                                                                            tmp_path):
    from drover import registry
    from drover import task as task_module

    server, base = http_server
    server.answer = lambda path: (200, b"ok", {})
    monkeypatch.setenv("DROVER_URL", base)
    script = tmp_path / "step1.py"
    script.write_text("import json\nfrom drover import Task\n")
    monkeypatch.setattr(task_module, "_main_script", lambda: ("step1.py", script.read_text()))
    sent = []

    def register(registration):
        sent.append(dict(registration))
        return {**registration, "id": registration["id"] or "t1"}

    monkeypatch.setattr(registry, "register", register)
    task = Task.init(project_name="p", task_name="t", task_type=TaskTypes.data_processing)
    assert task.id == "t1" and server.requests == ["/healthz"]
    assert sent[0] == {"id": None, "project": "p", "name": "t", "task_type": "data_processing",
                       "script": "import json\nfrom drover import Task\n", "script_name": "step1.py",
                       "requirements": [], "parameters": {}}
    args = task.connect({"test_size": 0.2, "seed": 3})
    assert args == {"test_size": 0.2, "seed": 3}
    assert sent[-1]["id"] == "t1" and sent[-1]["parameters"] == {"General/test_size": "0.2", "General/seed": "3"}
    with pytest.raises(SystemExit) as e:
        task.execute_remotely()
    assert e.value.code == 0
    with pytest.raises(NotImplementedError, match="clone=True"):
        task.execute_remotely(clone=True)


def test_a_reachable_controller_without_a_script_file_runs_offline(offline, http_server, monkeypatch):
    from drover import task as task_module

    server, base = http_server
    server.answer = lambda path: (200, b"ok", {})
    monkeypatch.setenv("DROVER_URL", base)
    monkeypatch.setattr(task_module, "_main_script", lambda: None)
    with pytest.warns(UserWarning, match="runs offline \\(this is no script file to register\\)"):
        task = Task.init(project_name="p", task_name="t")
    assert server.requests == ["/healthz"]
    with pytest.raises(RuntimeError, match="not registered"):
        task.execute_remotely()


def test_in_a_step_overrides_reach_connect_cast_and_execute_remotely_does_nothing(in_step):
    Task.set_step_overrides({"General/test_size": "0.25", "General/name": "x", "Other/n": "4"})
    try:
        task = Task.init(project_name="p", task_name="ignored")
        assert task.execute_remotely() is None
        args = task.connect({"test_size": 0.2, "name": "a", "keep": True})
        assert args == {"test_size": 0.25, "name": "x", "keep": True}
        assert isinstance(args["test_size"], float)
        assert task.connect({"n": 1}, name="Other") == {"n": 4}
    finally:
        Task.set_step_overrides({})


def test_task_types_are_clearmls():
    assert [t.name for t in TaskTypes] == CLEARML_TASK_TYPES
    assert [t.value for t in TaskTypes] == CLEARML_TASK_TYPES
    assert Task.TaskTypes is TaskTypes
    assert str(TaskTypes.qc) == "qc" and repr(TaskTypes.training) == "TaskTypes.training"
    assert TaskTypes.training == "training"


def test_init_refuses_what_it_cannot_do(offline):
    with pytest.raises(ValueError, match="unknown task_type 'trainer'"):
        Task.init(project_name="p", task_name="t", task_type="trainer")
    with pytest.raises(NotImplementedError, match=r"continue_last_task=.*Task\.artifacts"):
        Task.init(project_name="p", task_name="t", continue_last_task=True)
    with pytest.warns(UserWarning) as caught:
        Task.init(project_name="p", task_name="t", tags=["a"])
    assert ["tags=" in str(w.message) for w in caught] == [True, False]  # then the offline warning


def test_connect_records_a_dict_and_returns_it(offline):
    task = _quiet_init()
    args = {"test_size": 0.25, "random_state": 42, "verbose": False, "name": "iris"}
    assert task.connect(args) is args
    assert args == {"test_size": 0.25, "random_state": 42, "verbose": False, "name": "iris"}
    assert task.get_parameters() == {"General/test_size": "0.25", "General/random_state": "42",
                                     "General/verbose": "False", "General/name": "iris"}
    assert task.get_parameters(cast=True)["General/test_size"] == 0.25


def test_connect_an_object_under_a_section(offline):
    task = _quiet_init()

    class Options:
        def __init__(self):
            self.epochs = 3
            self.layers = [16, 8]
            self._private = "x"

        def method(self):
            return None

    opts = Options()
    assert task.connect(opts, name="model") is opts
    assert task.get_parameters() == {"model/epochs": "3", "model/layers": "[16, 8]"}
    with pytest.raises(ValueError, match="not int"):
        task.connect(3)


def test_overrides_are_cast_to_the_connected_values_type(offline):
    task = _quiet_init()
    task._overrides = {"General/test_size": "0.5", "General/epochs": "7", "General/shuffle": "true",
                       "General/sizes": "[1, 2]", "General/name": "x"}
    args = {"test_size": 0.25, "epochs": 3, "shuffle": False, "sizes": [4], "name": "n", "other": 1}
    task.connect(args)
    assert args == {"test_size": 0.5, "epochs": 7, "shuffle": True, "sizes": [1, 2], "name": "x", "other": 1}
    assert type(args["test_size"]) is float and type(args["epochs"]) is int
    assert task.connect({"epochs": 3}, ignore_remote_overrides=True) == {"epochs": 3}


@pytest.mark.parametrize(("text", "connected", "expected"), [
    ("0.25", 1.0, 0.25), ("3", 1, 3), ("3.0", 1, 3), ("False", True, False), ("1", False, True),
    ("[1, 2]", [0], [1, 2]), ("(1, 2)", (0,), (1, 2)), ('{"a": 1}', {}, {"a": 1}), ("x", None, "x"),
    ("7", "s", "7"),
])
def test_cast_override(text, connected, expected):
    value = cast_override("General/x", text, connected)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("text", "connected"), [("abc", 1.0), ("2.5", 1), ("maybe", True), ("{}", [1])])
def test_an_override_of_the_wrong_type_names_the_parameter(text, connected):
    with pytest.raises(ValueError, match=f"parameter General/x: override '{text}' is not a"):
        cast_override("General/x", text, connected)


def test_connect_configuration(offline, tmp_path):
    task = _quiet_init()
    config = {"lr": 0.1, "layers": [2, 3]}
    assert task.connect_configuration(config) is config
    assert task.get_configuration_object("General") == '{"layers": [2, 3], "lr": 0.1}'
    path = tmp_path / "conf.yaml"
    path.write_text("lr: 0.1\n")
    assert task.connect_configuration(path, name="file") == path
    assert task.get_configuration_object("file") == "lr: 0.1\n"
    with pytest.raises(ValueError, match="no such configuration file"):
        task.connect_configuration(str(tmp_path / "missing.yaml"))


def test_upload_artifact_keeps_objects_files_and_folders_offline(offline, tmp_path):
    task = _quiet_init()
    assert task.upload_artifact("frame", artifact_object={"rows": [1, 2]}) is True
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    task.upload_artifact("dataset", artifact_object=str(data))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\x00\x01")
    task.upload_artifact("model", artifact_object=folder)
    root = offline / task.id / "artifacts"
    assert task.get_offline_mode_folder() == offline / task.id

    frame = task.artifacts["frame"]
    assert frame.get() == {"rows": [1, 2]} and frame.type == "pickle"
    assert frame.get_local_copy() == str(root / "frame" / "frame.pkl")
    with open(frame.get_local_copy(), "rb") as f:
        assert pickle.load(f) == {"rows": [1, 2]}
    assert frame.url == (root / "frame" / "frame.pkl").resolve().as_uri()
    assert StorageManager.get_local_copy(frame.url) == str((root / "frame" / "frame.pkl").resolve())

    dataset = task.artifacts["dataset"]
    assert dataset.get() == str(root / "dataset" / "data.csv")
    assert open(dataset.get_local_copy()).read() == "a,b\n1,2\n"

    model = task.artifacts["model"]
    assert model.type == "folder" and model.url.endswith("/model/model.zip")
    extracted = model.get_local_copy()
    assert open(os.path.join(extracted, "weights.bin"), "rb").read() == b"\x00\x01"


def test_upload_artifact_replaces_deletes_and_refuses(offline, tmp_path):
    task = _quiet_init()
    task.upload_artifact("x", 1)
    task.upload_artifact("x", 2)
    assert task.artifacts["x"].get() == 2
    data = tmp_path / "once.txt"
    data.write_text("t")
    task.upload_artifact("once", str(data), delete_after_upload=True, metadata={"k": "v"})
    assert not data.exists() and task.artifacts["once"].metadata == {"k": "v"}
    with pytest.raises(ValueError, match="no such file or folder"):
        task.upload_artifact("missing", str(tmp_path / "nope.txt"), auto_pickle=False)
    with pytest.raises(NotImplementedError, match="serialization_function="):
        task.upload_artifact("y", 1, serialization_function=lambda v: b"")
    with pytest.raises(ValueError, match="output name"):
        task.upload_artifact("a/b", 1)


def test_in_a_step_the_task_is_the_step_and_says_what_is_not_supported(in_step):
    assert not Task.running_locally()
    task = Task.current_task()
    assert task is not None and task.id == "r1/train" and task.name == "train"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no offline warning inside a step
        assert Task.init(project_name="p", task_name="ignored") is task
    with pytest.raises(RuntimeError, match=r"no channel to its agent .*only Python function steps"):
        task.upload_artifact("model", {"w": 1})
    assert task.connect({"a": 1}) == {"a": 1}
    assert task.get_offline_mode_folder() is None
    with pytest.warns(UserWarning, match="step's console only"):
        task.get_logger().report_table("scores", "all", table_plot=[["f1"], [0.5]])


def _quiet_init():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Task.init(project_name="p", task_name="t")


def test_get_task_takes_a_step_id_and_says_what_it_cannot_do(offline):
    # Outside a step, names and other ids are registered tasks, looked up at the controller.
    with pytest.raises(ConnectionError, match=r"cannot reach the drover controller at http://127.0.0.1:1"):
        Task.get_task(project_name="examples", task_name="step 1")
    with pytest.raises(ConnectionError, match=r"cannot reach the drover controller"):
        Task.get_task(task_id="abc")
    with pytest.raises(ValueError, match=r"'r1/' is not a drover task id.*'<run id>/<step>'"):
        Task.get_task(task_id="r1/")


def test_get_task_reads_another_steps_outputs_over_the_api(offline, http_server, monkeypatch, tmp_path):
    """Outside a step, a step's task comes from the HTTP API and its artifacts download from it."""
    blob = pickle.dumps({"rows": 3})
    server, base = http_server
    answers = {
        "/api/v1/runs/r9/steps/make": json.dumps({"name": "make", "status": "succeeded", "outputs": {
            "table": {"digest": "d1", "size": len(blob), "file_name": "table.pkl"},
            "notes": {"digest": "d2", "size": 2, "file_name": "notes.txt"}}}).encode(),
        "/api/v1/runs/r9/steps/make/artifacts/table": blob,
    }
    server.answer = lambda path: (200, answers[path], {}) if path in answers else (404, b"{}", {})
    monkeypatch.setenv("DROVER_URL", base)
    monkeypatch.setenv("DROVER_CACHE_DIR", str(tmp_path / "cache"))
    task = Task.get_task(task_id="r9/make")
    assert task.id == "r9/make" and task.name == "make"
    assert {n: a.type for n, a in task.artifacts.items()} == {"table": "pickle", "notes": "file"}
    table = task.artifacts["table"]
    assert table.url == f"{base}/api/v1/runs/r9/steps/make/artifacts/table"
    assert table.get() == {"rows": 3}
    path = StorageManager.get_local_copy(table.url)
    assert os.path.basename(path) == "table.pkl"
    with pytest.raises(PermissionError, match="read-only"):
        task.upload_artifact("x", 1)
    with pytest.raises(ValueError, match=r"no task 'r9/gone'"):
        Task.get_task(task_id="r9/gone")

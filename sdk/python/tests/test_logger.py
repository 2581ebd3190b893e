"""Logger: ClearML's report calls print and keep what they report, offline."""
import warnings

import pytest

from drover import Logger
from drover.task import Task


@pytest.fixture
def task(monkeypatch, tmp_path):
    for name in ("DROVER_RUN_ID", "DROVER_STEP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DROVER_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("DROVER_OFFLINE_DIR", str(tmp_path))
    monkeypatch.setattr(Task, "_main", None)
    monkeypatch.setattr(Task, "_warned_offline", True)  # said by test_task; not this file's subject
    return Task.init(project_name="p", task_name="t")


def test_current_logger_is_the_current_tasks(monkeypatch):
    monkeypatch.delenv("DROVER_STEP", raising=False)
    monkeypatch.setattr(Task, "_main", None)
    assert Logger.current_logger() is None


def test_scalars_are_printed_and_kept_per_title_and_series(task, capsys):
    logger = Logger.current_logger()
    assert logger is task.get_logger()
    for i, loss in enumerate([0.9, 0.5, 0.25]):
        logger.report_scalar(title="loss", series="train", value=loss, iteration=i)
    logger.report_scalar("loss", "test", 1, 2)
    logger.report_scalar("accuracy", "test", 0.875, 2)
    out = capsys.readouterr().out
    assert "drover: scalar loss / train @ 1: 0.5\n" in out
    assert task.get_reported_scalars() == {
        "loss": {"train": {"x": [0.0, 1.0, 2.0], "y": [0.9, 0.5, 0.25]}, "test": {"x": [2.0], "y": [1.0]}},
        "accuracy": {"test": {"x": [2.0], "y": [0.875]}},
    }
    with pytest.raises(ValueError, match="value must be a number, not 'high'"):
        logger.report_scalar("loss", "train", "high", 3)


def test_single_values_and_text(task, capsys):
    logger = task.get_logger()
    logger.report_single_value("accuracy", 0.97)
    logger.report_text("hello")
    logger.report_text("quiet", print_console=False)
    logger.report_text("careful", level=30)
    captured = capsys.readouterr()
    assert "drover: value accuracy: 0.97" in captured.out and "hello\n" in captured.out
    assert "quiet" not in captured.out and "careful\n" in captured.err
    assert task.get_reported_single_values() == {"accuracy": 0.97}
    assert logger.texts == ["hello", "quiet", "careful"]
    assert logger.flush() is True


def test_tables_from_rows_csv_and_dataframes(task, capsys, tmp_path):
    logger = task.get_logger()
    logger.report_table("scores", "by class", iteration=1, table_plot=[["class", "f1"], ["a", 0.5], ["bb", 1]])
    out = capsys.readouterr().out
    assert "drover: table scores / by class @ 1:\nclass  f1\na      0.5\nbb     1\n" in out
    assert logger.tables[("scores", "by class")] == (1, [["class", "f1"], ["a", 0.5], ["bb", 1]])
    data = tmp_path / "t.csv"
    data.write_text("x,y\n1,2\n")
    logger.report_table("csv", "file", csv=str(data))
    assert logger.tables[("csv", "file")] == (None, [["x", "y"], ["1", "2"]])
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"f1": [0.5, 1.0]}, index=pandas.Index(["a", "b"], name="class"))
    logger.report_table("frame", "df", table_plot=frame)
    assert logger.tables[("frame", "df")] == (None, [["class", "f1"], ["a", 0.5], ["b", 1.0]])
    with pytest.raises(ValueError, match=r"table_plot .* or csv"):
        logger.report_table("t", "s")
    with pytest.warns(UserWarning, match="extra_layout"):
        logger.report_table("t", "s", table_plot=[[1]], extra_layout={"title": "x"})


def test_reports_outside_a_step_do_not_warn(task):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task.get_logger().report_scalar("a", "b", 1.0, 0)
        task.get_logger().report_single_value("v", 1)

"""ClearML's TaskScheduler timing arguments as cron expressions, and the arguments refused."""
from __future__ import annotations

import pytest

from drover.automation import TaskScheduler, TriggerScheduler
from drover.scheduler import to_cron


@pytest.mark.parametrize(("kwargs", "cron"), [
    ({"minute": 15}, "*/15 * * * *"),
    ({"hour": 1}, "0 * * * *"),
    ({"hour": 1, "minute": 30}, "30 * * * *"),
    ({"minute": 30, "hour": 22, "day": 1}, "30 22 * * *"),
    ({"minute": 30, "hour": 7, "day": 2}, "30 7 */2 * *"),
    ({"minute": 30, "hour": 8, "day": 0, "weekdays": ["saturday"]}, "30 8 * * 6"),
    ({"hour": 2, "weekdays": ["saturday", "sunday"]}, "0 */2 * * 6,0"),
    ({"month": 1, "day": 5}, "0 0 5 * *"),
    ({"weekdays": ["Monday"]}, "0 0 * * 1"),
])
def test_timing_arguments_become_cron(kwargs, cron):
    assert to_cron(**kwargs) == cron


def test_bad_timing_arguments_are_named():
    with pytest.raises(ValueError, match="minute=75"):
        to_cron(minute=75)
    with pytest.raises(ValueError, match="funday"):
        to_cron(hour=1, weekdays=["funday"])
    with pytest.raises(ValueError, match="at least one"):
        to_cron()


def test_arguments_without_a_counterpart_are_refused_by_name():
    scheduler = TaskScheduler()
    with pytest.raises(NotImplementedError, match="recurring, year"):
        scheduler.add_task(schedule_task_id="0193a2b4c5d6e7f80123456789abcdef", minute=5, year=2030,
                           recurring=False)
    with pytest.raises(NotImplementedError, match="schedule_function"):
        scheduler.add_task(schedule_function=print, minute=5)
    triggers = TriggerScheduler()
    with pytest.raises(NotImplementedError, match="trigger_on_metric"):
        triggers.add_task_trigger(schedule_task_id="r", trigger_project="p", trigger_name="n",
                                  trigger_on_metric="loss")
    with pytest.raises(NotImplementedError, match="completed"):
        triggers.add_task_trigger(schedule_task_id="r", trigger_project="p", trigger_name="n",
                                  trigger_on_status=["completed", "failed"])


def test_added_schedules_wait_for_start():
    scheduler = TaskScheduler()
    with pytest.warns(UserWarning, match="queue='default' is not used"):
        assert scheduler.add_task(schedule_task_id="0193a2b4c5d6e7f80123456789abcdef", queue="default",
                                  minute=30, hour=10, day=1, single_instance=True,
                                  task_parameters={"Args/who": "me", "rows": 3}, name="daily")
    assert scheduler._pending == [{
        "name": "daily", "cron": "30 10 * * *", "overlap": False,
        "from_run": "0193a2b4c5d6e7f80123456789abcdef", "params": {"who": "me", "rows": "3"},
    }]

"""ClearML's task types, accepted so `task_type=TaskTypes.training` keeps working (drover shows
no task types: a component's `task_type` has no effect)."""
import enum


class TaskTypes(str, enum.Enum):
    """The values of ClearML's `Task.TaskTypes`."""

    training = "training"
    testing = "testing"
    inference = "inference"
    data_processing = "data_processing"
    application = "application"
    monitor = "monitor"
    controller = "controller"
    optimizer = "optimizer"
    service = "service"
    qc = "qc"
    custom = "custom"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        # As ClearML shows it, so `Task.init`'s default reads the same in both.
        return f"TaskTypes.{self.value}"

"""drover's Python SDK: build pipelines from functions (PipelineController) or decorators
(PipelineDecorator), fetch files (StorageManager), and ClearML's Task, Logger and TaskTypes.

Importing this package needs only the standard library: step code imports it on agents.
Everything is loaded on first use, so a step (the harness imports `drover.runner`) does not pay
for the HTTP client PipelineController needs.
"""
from typing import TYPE_CHECKING, Any

from .task_types import TaskTypes

if TYPE_CHECKING:
    from .pipeline import PipelineController
    from .storage import StorageManager

__version__ = "0.1.0"
__all__ = [
    "Logger", "PipelineController", "PipelineDecorator", "StorageManager", "Task", "TaskTypes",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "PipelineController":
        from .pipeline import PipelineController

        return PipelineController
    if name == "StorageManager":
        from .storage import StorageManager

        return StorageManager
    if name == "PipelineDecorator":
        from .decorator import PipelineDecorator

        return PipelineDecorator
    if name == "Task":
        from .task import Task

        return Task
    if name == "Logger":
        from .logger import Logger

        return Logger
    raise AttributeError(f"module 'drover' has no attribute {name!r}")

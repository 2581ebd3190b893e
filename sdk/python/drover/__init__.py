"""drover's Python SDK: build pipelines from functions (PipelineController), fetch files
(StorageManager), and ClearML's Task, Logger and TaskTypes.

Importing this package needs only the standard library: step code imports it on agents.
Task, Logger and TaskTypes are loaded on first use.
"""
from typing import Any

from .pipeline import PipelineController
from .storage import StorageManager

__version__ = "0.1.0"
__all__ = ["Logger", "PipelineController", "StorageManager", "Task", "TaskTypes", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Task":
        from .task import Task

        return Task
    if name == "Logger":
        from .logger import Logger

        return Logger
    if name == "TaskTypes":
        from .task_types import TaskTypes

        return TaskTypes
    raise AttributeError(f"module 'drover' has no attribute {name!r}")

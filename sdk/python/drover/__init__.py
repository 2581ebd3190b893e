"""drover's Python SDK: build pipelines from functions (PipelineController) or decorators
(PipelineDecorator), and fetch files (StorageManager).

Importing this package needs only the standard library: step code imports it on agents.
PipelineDecorator is loaded on first use.
"""
from typing import Any

from .pipeline import PipelineController
from .storage import StorageManager
from .task_types import TaskTypes

__version__ = "0.1.0"
__all__ = ["PipelineController", "PipelineDecorator", "StorageManager", "TaskTypes", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "PipelineDecorator":
        from .decorator import PipelineDecorator

        return PipelineDecorator
    raise AttributeError(f"module 'drover' has no attribute {name!r}")

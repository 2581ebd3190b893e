"""drover's Python SDK: build pipelines from functions (PipelineController) and fetch files (StorageManager).

Importing this package needs only the standard library: step code imports it on agents.
"""
from .pipeline import PipelineController
from .storage import StorageManager

__version__ = "0.1.0"
__all__ = ["PipelineController", "StorageManager", "__version__"]

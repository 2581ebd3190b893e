"""ClearML's `clearml.automation` import path: `from drover.automation import PipelineDecorator`."""
from ..decorator import PipelineDecorator
from ..pipeline import PipelineController
from ..scheduler import TaskScheduler, TriggerScheduler

__all__ = ["PipelineController", "PipelineDecorator", "TaskScheduler", "TriggerScheduler"]

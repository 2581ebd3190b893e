"""ClearML's `clearml.automation.controller` import path, for scripts written against ClearML."""
from ..decorator import PipelineDecorator
from ..pipeline import PipelineController

__all__ = ["PipelineController", "PipelineDecorator"]

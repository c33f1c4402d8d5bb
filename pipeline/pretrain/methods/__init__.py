"""SSL objectives. Add one by adding a module here and a ``conf/pretrain/method/*.yaml`` option."""

from pipeline.pretrain.methods.base import SSLMethod, StepInputs
from pipeline.pretrain.methods.distillation import Distillation, DistillationSpec
from pipeline.pretrain.methods.simclr import SimCLR

__all__ = ["Distillation", "DistillationSpec", "SSLMethod", "SimCLR", "StepInputs"]

"""SSL objectives. Add one by adding a module here and a ``conf/pretrain/method/*.yaml`` option."""

from pipeline.pretrain.methods.base import SSLMethod, StepInputs
from pipeline.pretrain.methods.self_distillation import SelfDistillation
from pipeline.pretrain.methods.simclr import SimCLR
from pipeline.pretrain.methods.teacher_distillation import Distillation

__all__ = ["Distillation", "SSLMethod", "SelfDistillation", "SimCLR", "StepInputs"]

"""Self-supervised pretraining (DINOv2 family) of timm ViTs with Lightning and lightly.

One concept per module: :mod:`schedules`, :mod:`augment` (multi-crop presets),
:mod:`data` (deterministic WebDataset streaming), :mod:`methods` (objectives),
:mod:`module` (the LightningModule), :mod:`knn_monitor`, :mod:`watchdog`,
:mod:`export`. Only :mod:`pipeline.stages.pretrain` sees Hydra configs.
"""

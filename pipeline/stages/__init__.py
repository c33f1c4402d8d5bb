"""Pipeline stages. Each ``pipeline/stages/<stage>.py`` exposes ``run(cfg) -> Manifest``.

Stages are the only code that sees Hydra configs; they build the typed parameter
classes of ``pipeline.config`` from it (``OmegaConf.to_object``), call typed
functions elsewhere in the package and talk to each other only through files on disk.
"""

"""Typed cluster profiles: ``conf/cluster/<name>.yaml`` merged onto :class:`pipeline.config.cluster.ClusterConfig`.

Plain YAML checked against these dataclasses (OmegaConf structured merge), so a misspelt
key fails before anything is submitted, naming the key and the file.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config.cluster import ClusterConfig, Resources

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "cluster"


JOB_KINDS = ("ingest", "curate_embed", "curate", "pretrain", "eval")


def load_cluster(name: str, overrides: list[str] | None = None) -> DictConfig:
    """``conf/cluster/<name>.yaml`` (or a path) checked against :class:`ClusterConfig`.

    Args:
        name: A profile name under ``conf/cluster`` or a path to a YAML file.
        overrides: ``key=value`` dot-list overrides (``job.partition=gpu``).

    Raises:
        FileNotFoundError: naming the known profiles.
        ValueError: naming the bad key and the file.
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONF_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"cluster profile {name!r} not found ({path}); known: {known}")
    try:
        raw = OmegaConf.load(path)
        if isinstance(raw, DictConfig) and "defaults" in raw:
            # The Hydra defaults list (`- schema`) is for composing with run.py's config.
            raw = OmegaConf.masked_copy(raw, [str(k) for k in raw if k != "defaults"])
        cfg = OmegaConf.merge(OmegaConf.structured(ClusterConfig), raw)
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        for kind, extra in cfg.stages.items():
            if kind not in JOB_KINDS:
                raise ValueError(f"stages.{kind}: unknown job kind; known: {list(JOB_KINDS)}")
            OmegaConf.merge(OmegaConf.structured(Resources), extra)
    except OmegaConfBaseException as e:
        raise ValueError(f"{path}: {e}") from e
    if cfg.embed_tasks < 1 or cfg.array_parallelism < 1:
        raise ValueError(f"{path}: embed_tasks and array_parallelism must be >= 1")
    assert isinstance(cfg, DictConfig)
    return cfg


def resources_for(cluster: DictConfig, kind: str) -> Resources:
    """The resources of one job kind: ``job`` merged with ``stages.<kind>``."""
    merged = OmegaConf.merge(OmegaConf.structured(Resources), cluster.job, cluster.stages.get(kind, {}))
    out = OmegaConf.to_object(merged)
    assert isinstance(out, Resources)
    return out

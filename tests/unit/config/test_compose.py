"""Every option of every config group composes, and bad configs fail at compose time, naming the key.

Groups and options are found by scanning ``conf/``, so options added later are
covered without editing this file.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.config import register_configs
from tests.conftest import CONF_DIR


def _options() -> list[tuple[str, str]]:
    out = []
    for f in sorted(CONF_DIR.rglob("*.yaml")):
        rel = f.relative_to(CONF_DIR)
        if len(rel.parts) < 2:
            continue  # config.yaml itself
        out.append(("/".join(rel.parts[:-1]), rel.stem))
    return out


OPTIONS = _options()


def _plugin_missing(group: str, option: str) -> str | None:
    """Launcher/sweeper options need their Hydra plugin; name it when it cannot be imported."""
    if not group.startswith("hydra/"):
        return None
    text = (CONF_DIR / group / f"{option}.yaml").read_text()
    for plugin in (
        "hydra_plugins.hydra_submitit_launcher",
        "hydra_plugins.hydra_joblib_launcher",
        "hydra_plugins.hydra_ray_launcher",
        "hydra_plugins.hydra_optuna_sweeper",
    ):
        if plugin in text and importlib.util.find_spec(plugin) is None:
            return plugin
    return None


def _compose_option(group: str, option: str, tmp_path: Path) -> DictConfig:
    """Compose with ``group=option``; Hydra's own node is kept so ``${hydra:...}`` resolves."""
    register_configs()
    base = [f"paths.root={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            cfg = compose("config", overrides=[*base, f"{group}={option}"], return_hydra_config=True)
        except ConfigCompositionException as e:
            if "No match in the defaults list" not in str(e) and "Could not override" not in str(e):
                raise
            # A group that the main defaults list does not name is appended.
            cfg = compose("config", overrides=[*base, f"+{group}={option}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_conf_has_options() -> None:
    groups = {g for g, _ in OPTIONS}
    assert {"paths", "stage", "ingest", "tracking", "data_recipe"} <= groups


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_resolves(group: str, option: str, tmp_path: Path) -> None:
    plugin = _plugin_missing(group, option)
    if plugin:
        pytest.skip(f"{group}={option} needs {plugin}, which is not installed")
    cfg = _compose_option(group, option, tmp_path)
    try:
        with open_dict(cfg):
            hydra_node = cfg.pop("hydra")
        plain = OmegaConf.to_container(cfg, resolve=True)  # every interpolation of the job config resolves
    finally:
        HydraConfig.instance().cfg = None  # do not leak a "running under Hydra" state into other tests
    assert isinstance(plain, dict) and hydra_node is not None
    top = group.split("/")[0]
    global_package = "@package _global_" in (CONF_DIR / group / f"{option}.yaml").read_text()
    if top != "hydra" and not global_package:
        assert cfg[top] is not None, f"{group}={option} composed to an empty {top}"
        # Typed: the option was merged onto a dataclass schema, so typos fail (see below).
        assert OmegaConf.get_type(cfg[top]) not in (dict, None), (
            f"conf/{group}/{option}.yaml has no schema: start it with `defaults: [schema]` "
            f"(or `- <name>_schema`) and register the dataclass in pipeline/config/"
        )


@pytest.fixture
def conf_copy(tmp_path: Path) -> Callable[[str, str, dict], DictConfig]:
    """Compose from a copy of ``conf/`` with one extra option file (to test YAML typos)."""

    def _compose(group: str, option: str, body: dict) -> DictConfig:
        conf = tmp_path / "conf"
        if not conf.exists():
            shutil.copytree(CONF_DIR, conf)
        (conf / group / f"{option}.yaml").write_text(yaml.safe_dump(body))
        register_configs()
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return compose("config", overrides=[f"paths.root={tmp_path}", f"{group}={option}"])

    return _compose


def _compose(overrides: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("ingest.shard_sise=10", "shard_sise"),
        ("data_recipe.elpv_limt=5", "elpv_limt"),
        ("tracking.enabeld=false", "enabeld"),
        ("sede=1", "sede"),
    ],
)
def test_misspelt_key_on_the_command_line_fails_naming_it(override: str, key: str) -> None:
    with pytest.raises(ConfigCompositionException, match=key):
        _compose([override])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("ingest.shard_size=abc", "ingest.shard_size"),
        ("tracking.enabled=maybe", "tracking.enabled"),
        ("data_recipe.eval_fraction=lots", "data_recipe.eval_fraction"),
        ("seed=[1,2]", "seed"),
    ],
)
def test_wrong_type_on_the_command_line_fails_naming_it(override: str, key: str) -> None:
    with pytest.raises(ConfigCompositionException) as e:
        _compose([override])
    assert key in str(e.value) + str(e.value.__cause__)


def test_misspelt_key_in_a_yaml_option_fails_naming_it(conf_copy) -> None:
    with pytest.raises(ConfigCompositionException) as e:
        conf_copy("ingest", "typo", {"defaults": ["schema"], "shard_sise": 5})
    assert "shard_sise" in str(e.value) + str(e.value.__cause__)


def test_wrong_type_in_a_yaml_option_fails_naming_it(conf_copy) -> None:
    with pytest.raises(ConfigCompositionException) as e:
        conf_copy("ingest", "bad_type", {"defaults": ["schema"], "workers": "many"})
    assert "workers" in str(e.value) + str(e.value.__cause__)


def test_folder_recipe_fields_are_typed() -> None:
    cfg = _compose(["data_recipe=folder", "data_recipe.pool=[/a,/b]", "data_recipe.test_fraction=0.25"])
    assert list(cfg.data_recipe.pool) == ["/a", "/b"] and cfg.data_recipe.test_fraction == 0.25
    with pytest.raises(ConfigCompositionException, match="labeld"):
        _compose(["data_recipe=folder", "data_recipe.labeld=/x"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (
            ["pretrain/model=efficientnet_lite0", "pretrain/method=dinov2"],
            r"pretrain\.method\.ibot_weight=1\.0.*pretrain/method=dino",
        ),
        (
            ["pretrain/model=efficientnet_lite0", "pretrain/method=dino", "pretrain.model.patch_size=16"],
            r"pretrain\.model\.patch_size",
        ),
        (
            ["pretrain/model=efficientnet_lite0", "pretrain/method=distillation", "pretrain.trainer.compile=true"],
            r"pretrain\.trainer\.compile",
        ),
        (["pretrain/model=vit_tiny", "pretrain.model.weights=efficientnet_lite0_pypi"], r"pretrain\.model\.weights"),
    ],
    ids=["dinov2-ibot-on-cnn", "patch-size-on-cnn", "compiled-cnn", "lite-weights-on-vit"],
)
def test_a_method_backbone_mismatch_fails_before_any_stage_runs(tmp_path: Path, overrides: list[str], key: str) -> None:
    """``python run.py stage=all`` with a pairing that cannot train stops on the composed config, naming
    the key, before ingest (or anything else) writes a file."""
    from pipeline.app import run_pipeline

    cfg = _compose([f"paths.root={tmp_path}", "stage=all", "tracking=off", *overrides])
    with pytest.raises(ValueError, match=key):
        run_pipeline(cfg)
    assert not any(tmp_path.iterdir())

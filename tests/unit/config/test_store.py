"""Hydra registration in one place: every schema stored, without importing the stages or, for the
parameter classes themselves, Hydra."""

from __future__ import annotations

import subprocess
import sys

from hydra.core.config_store import ConfigStore

from pipeline.config import register_configs
from tests.conftest import CONF_DIR, ROOT

AREAS = ("augment", "cluster", "curate", "eval", "ingest", "lock", "models", "pretrain", "schema")


def _fresh(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_parameter_classes_import_without_hydra() -> None:
    mods = ", ".join(f"pipeline.config.{a}" for a in AREAS)
    loaded = _fresh(f"import sys, {mods}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'hydra'))")
    assert loaded == "[]"


def test_registration_does_not_import_the_stages() -> None:
    loaded = _fresh(
        "import sys; from pipeline.config import register_configs; register_configs(); "
        "print(sorted(m for m in sys.modules if m.startswith('pipeline.stages')))"
    )
    assert loaded == "[]"


def test_every_schema_an_option_names_is_stored() -> None:
    import yaml

    register_configs()
    cs = ConfigStore.instance()
    for f in sorted(CONF_DIR.rglob("*.yaml")):
        parts = f.relative_to(CONF_DIR).parts
        if len(parts) < 2 or parts[0] in ("hydra", "experiment"):
            continue
        first = yaml.safe_load(f.read_text())["defaults"][0]
        group = "/".join(parts[:-1])
        assert cs.load(f"{group}/{first}.yaml").node is not None, f"{f}: schema {group}/{first} is not registered"

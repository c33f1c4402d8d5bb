#!/usr/bin/env python
"""Curation ablation in one command: ``python scripts/curation_ablation.py [overrides...]``.

1. ingest + curate (skipped when their outputs match the config);
2. count the curated images N;
3. pretrain three times with the same steps (``experiment=curation_ablation``, a Hydra
   multirun over ``pretrain.data.source=seeds,pool,curate`` with ``pretrain.data.subset=N``);
4. evaluate the three exports side by side into ``<output_dir>/eval_curation_ablation``.

Extra arguments are Hydra overrides passed to every step (``data_recipe=...``, ``tracking=off``, ...).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _output_dir(overrides: list[str]) -> Path:
    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir

    from pipeline.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return Path(cfg.paths.output_dir).resolve()


def curated_count(folder: Path) -> int:
    """Images in the curated shards (one ``.json`` member per sample)."""
    shards = sorted(folder.glob("shard-*.tar"))
    if not shards:
        raise FileNotFoundError(f"no curated shards in {folder}: run `python run.py stage=curate` first")
    n = 0
    for s in shards:
        with tarfile.open(s) as tf:
            n += sum(1 for m in tf if m.name.endswith(".json"))
    return n


def main(overrides: list[str]) -> None:
    _run(["stage.stages=[ingest,curate]", *overrides])
    n = curated_count(_output_dir(overrides) / "curate" / "shards")
    print(f"curated set: {n} images; pretraining on seeds / pool subset of {n} / curated", flush=True)
    _run(["-m", "stage=pretrain", "experiment=curation_ablation", f"pretrain.data.subset={n}", *overrides])
    _run(["stage=eval", "experiment=curation_ablation", *overrides])


if __name__ == "__main__":
    main(sys.argv[1:])

"""One command submits ingest -> curate embedding array -> merge/dedup/retrieve, chained by afterok.

The real curate stage runs on the test cluster: the embed step as a 2-task Slurm job array
(task r of n embeds shards r::n) and the rest as one job that Slurm starts only after the
whole array succeeded (``--dependency=afterok:<array id>``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from tests.slurm.conftest import REPO
from tests.slurm.jobs import job_records
from tests.slurm.tinydata import make_pool

N_POOL, SHARD = 16, 4
TASKS = 2


def test_submit_curate_chain(slurm_cluster, tmp_path: Path) -> None:
    pool = make_pool(tmp_path / "pool", N_POOL, seed=1)
    seeds = make_pool(tmp_path / "seeds", 4, seed=2)
    root = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cluster.submit",
        "cluster=slurm_local_test",
        "cluster.wait=true",
        f"cluster.embed_tasks={TASKS}",
        "stage=all",
        "stage.stages=[ingest,curate]",
        "data_recipe=folder",
        "data_recipe.name=tiny_chain",
        f"data_recipe.pool=[{pool}]",
        f"data_recipe.seeds=[{seeds}]",
        f"ingest.shard_size={SHARD}",
        "ingest.workers=1",
        f"paths.root={root}",
        "tracking=off",
        "progress=false",
        "curate.embed.backbone.name=test_efficientnet",
        "curate.embed.backbone.weights=null",
        "curate.embed.workers=0",
        "curate.embed.batch_size=8",
        "curate/retrieval=knn",
        "curate.retrieval.k=2",
    ]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400, env=os.environ.copy())
    assert p.returncode == 0, f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    ids = dict(re.findall(r"submitted (\w+): job (\d+)", p.stdout))
    assert list(ids) == ["ingest", "curate_embed", "curate"], p.stdout
    assert re.search(rf"curate_embed: job {ids['curate_embed']} array of {TASKS} after {ids['ingest']}", p.stdout)

    # The array: every task finished, each embedded its own shards.
    tasks = job_records(ids["curate_embed"])
    assert len(tasks) == TASKS and all(t["JobState"] == "COMPLETED" for t in tasks), tasks
    logs = root / "slurm"
    for r in range(TASKS):
        text = "\n".join(f.read_text() for f in logs.glob(f"{ids['curate_embed']}_{r}/*_log.err"))
        assert f"rank {r}/{TASKS}" in text, text[-2000:]
    embed = root / "tiny_chain" / "curate" / "embed" / "pool"
    assert len(list(embed.glob("ids-*.json"))) == N_POOL // SHARD
    assert json.loads((embed / "manifest.json").read_text())["counts"]["images"] == N_POOL

    # The merge job waited for the whole array (afterok on the array id), then ran the rest.
    script = next((logs / ids["curate"]).glob("*_submission.sh")).read_text()
    assert f"--dependency=afterok:{ids['curate_embed']}" in script
    merge = job_records(ids["curate"])[0]
    assert merge["JobState"] == "COMPLETED"
    started = datetime.fromisoformat(merge["StartTime"])
    assert all(started >= datetime.fromisoformat(t["EndTime"]) for t in tasks)
    m = json.loads((root / "tiny_chain" / "curate" / "manifest.json").read_text())
    assert m["counts"]["embed.pool"] == N_POOL
    assert list((root / "tiny_chain" / "curate" / "shards").glob("shard-*.tar"))
    assert (root / "tiny_chain" / "curate" / "report").is_dir()

"""Submit pipeline stages to Slurm as one dependency chain.

::

    python -m pipeline.cluster.submit cluster=slurm_gpu stage=all data_recipe=folder ...
    python -m pipeline.cluster.submit cluster=slurm_gpu cluster.job.account=myproj stage=curate

``cluster=<profile>`` picks ``conf/cluster/<profile>.yaml`` (``cluster.<key>=<value>`` overrides
it); every other argument is a normal ``run.py`` override and is passed to every job.
The stages become Slurm jobs, each starting only when the previous one succeeded
(``--dependency=afterok``); curate becomes a job array that embeds the shards
(task ``r`` of ``n`` embeds shards ``r::n``, each task resumable) followed by one job
that merges the embeddings and runs dedup, decontamination, retrieval, write and report.
Slurm does all the scheduling; this module only writes the jobs (through submitit).

Each job runs the stage in-process (``pipeline.app.run_pipeline``), so Slurm's warning signal
reaches the training loop, and submitit requeues a job that hits its time limit; a requeued
stage skips its finished (sub-)steps.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from omegaconf import DictConfig, OmegaConf

from pipeline.cluster.config import Resources, load_cluster, resources_for
from pipeline.cluster.slurm import wait_final

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


def compose(overrides: list[str]) -> DictConfig:
    """The pipeline config for ``overrides``, as ``run.py`` would compose it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pipeline.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


class StageJob(submitit.helpers.Checkpointable):
    """One Slurm job (or array task): run the pipeline with ``overrides`` in-process.

    Checkpointable: on a time limit or preemption submitit requeues the same call, and the
    stage resumes from its finished sub-steps (and pretrain from its last checkpoint).
    """

    def __call__(self, overrides: list[str], env: dict[str, str]) -> dict[str, Any]:
        os.environ.update(env)
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
        cfg = compose(overrides)
        log.info("job %s: run.py %s", os.environ.get("SLURM_JOB_ID"), " ".join(overrides))
        from pipeline.app import run_pipeline

        manifests = run_pipeline(cfg)
        return {name: dict(m.counts) for name, m in manifests.items()}


@dataclass
class PlannedJob:
    """One job of the chain.

    Attributes:
        name: Job name (also the Slurm ``--job-name``).
        kind: Resource profile key (``ingest``, ``curate_embed``, ``curate``, ...).
        overrides: ``run.py`` overrides of this job.
        tasks: Array tasks (1: a plain job); task ``r`` gets ``RANK=r WORLD_SIZE=tasks``.
    """

    name: str
    kind: str
    overrides: list[str]
    tasks: int = 1
    job_id: str | None = None
    depends_on: str | None = None
    jobs: list[Any] = field(default_factory=list)


def plan(cfg: DictConfig, overrides: list[str], cluster: DictConfig) -> list[PlannedJob]:
    """The chain for the composed ``cfg``: one job per stage, curate as array + merge job."""
    base = [o for o in overrides if not o.lstrip("+~").startswith(("stage=", "stage."))]
    steps_given = next((o for o in base if o.startswith("curate.steps=")), None)
    chain: list[PlannedJob] = []
    for stage in cfg.stage.stages:
        own = [*base, f"stage={stage}"]
        if stage == "curate":
            steps = list(cfg.curate.steps) if cfg.get("curate") is not None else ["embed"]
            if "embed" in steps:
                embed = [o for o in own if o is not steps_given] + ["curate.steps=[embed]"]
                chain.append(PlannedJob("curate_embed", "curate_embed", embed, tasks=cluster.embed_tasks))
                if steps == ["embed"]:
                    continue
        chain.append(PlannedJob(stage, stage, own))
    return chain


def slurm_parameters(res: Resources, name: str, dependency: str | None, cluster: DictConfig) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters for one job."""
    additional = {"chdir": str(REPO), **dict(res.additional)}
    if res.requeue:
        additional["requeue"] = True
    srun_args = []
    if res.container_image:
        srun_args.append(f"--container-image={res.container_image}")
        srun_args.append(f"--container-workdir={REPO}")
    if res.container_mounts:
        srun_args.append(f"--container-mounts={res.container_mounts}")
    p: dict[str, Any] = {
        "job_name": name,
        "partition": res.partition,
        "account": res.account,
        "qos": res.qos,
        "time": res.time_min,
        "nodes": res.nodes,
        "ntasks_per_node": res.tasks_per_node,
        "cpus_per_task": res.cpus_per_task,
        "gpus_per_node": res.gpus_per_node or None,
        "mem": f"{res.mem_gb}GB" if res.mem_gb else None,
        "signal_delay_s": res.signal_delay_s,
        "setup": list(res.setup),
        "dependency": f"afterok:{dependency}" if dependency else None,
        "array_parallelism": cluster.array_parallelism,
        "additional_parameters": additional,
        "srun_args": srun_args,
    }
    return {k: v for k, v in p.items() if v is not None}


def training_overrides(cfg: DictConfig, res: Resources, given: list[str]) -> list[str]:
    """``pretrain.trainer.{num_nodes,devices}`` matching the job's nodes and tasks per node.

    Lightning checks them against ``SLURM_NTASKS``; set here unless the user set them.
    """
    if OmegaConf.select(cfg, "pretrain.trainer.num_nodes") is None:
        return []
    out = []
    for key, value in (("num_nodes", res.nodes), ("devices", res.tasks_per_node)):
        if not any(o.startswith(f"pretrain.trainer.{key}=") for o in given):
            out.append(f"pretrain.trainer.{key}={value}")
    return out


def submit(
    chain: list[PlannedJob], cluster: DictConfig, folder: Path, cfg: DictConfig | None = None
) -> list[PlannedJob]:
    """Submit the chain, each job ``afterok`` the previous; fills ``job_id``."""
    previous: str | None = None
    for job in chain:
        res = resources_for(cluster, job.kind)
        if job.kind == "pretrain" and cfg is not None:
            job.overrides = [*job.overrides, *training_overrides(cfg, res, job.overrides)]
        ex = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=cluster.max_num_timeout)
        ex.update_parameters(**slurm_parameters(res, job.name, previous, cluster))
        if job.tasks > 1:
            envs = [{"RANK": str(r), "WORLD_SIZE": str(job.tasks)} for r in range(job.tasks)]
            job.jobs = ex.map_array(StageJob(), [job.overrides] * job.tasks, envs)
            job.job_id = job.jobs[0].job_id.split("_")[0]
        else:
            job.jobs = [ex.submit(StageJob(), job.overrides, {})]
            job.job_id = job.jobs[0].job_id
        job.depends_on = previous
        previous = job.job_id
    return chain


def wait(chain: list[PlannedJob], timeout: float) -> dict[str, str]:
    """Wait for every job of the chain; ``{name: final state}``."""
    deadline = time.monotonic() + timeout
    out: dict[str, str] = {}
    for job in chain:
        assert job.job_id is not None
        out[job.name] = wait_final(job.job_id, timeout=max(1.0, deadline - time.monotonic()))
    return out


def parse_args(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """Split argv into (profile, cluster overrides, run.py overrides)."""
    profile, cluster_over, rest = None, [], []
    for a in argv:
        if a.startswith("cluster="):
            profile = a.split("=", 1)[1]
        elif a.startswith("cluster."):
            cluster_over.append(a[len("cluster.") :])
        else:
            rest.append(a)
    if profile is None:
        raise SystemExit(
            "usage: python -m pipeline.cluster.submit cluster=<profile> [cluster.key=value] [run.py overrides]"
        )
    return profile, cluster_over, rest


def main(argv: list[str] | None = None) -> dict[str, str] | None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    profile, cluster_over, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    cluster = load_cluster(profile, cluster_over)
    cfg = compose(overrides)  # fails here, before submitting, on a bad override
    folder = Path(cluster.folder or Path(cfg.paths.root) / "slurm").resolve()
    chain = submit(plan(cfg, overrides, cluster), cluster, folder, cfg)
    for job in chain:
        arr = f" array of {job.tasks}" if job.tasks > 1 else ""
        dep = f" after {job.depends_on}" if job.depends_on else ""
        print(f"submitted {job.name}: job {job.job_id}{arr}{dep}")
    print(f"logs: {folder}/<job id>/   queue: squeue -u $USER")
    if not cluster.wait:
        return None
    result = wait(chain, timeout=float(os.environ.get("PIPELINE_SUBMIT_TIMEOUT", str(7 * 24 * 3600))))
    for name, state in result.items():
        print(f"{name}: {state}")
    if any(s != "COMPLETED" for s in result.values()):
        raise SystemExit(f"some jobs did not complete: {result}; logs under {folder}")
    return result


if __name__ == "__main__":
    main()

"""Cluster profiles and the job chain, without a cluster (tests/slurm runs them for real)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pipeline.cluster.config import load_cluster, resources_for
from pipeline.cluster.requeue import next_hpc_path, resume_checkpoint
from pipeline.cluster.submit import PlannedJob, parse_args, plan, slurm_parameters, training_overrides


def test_profiles_load_and_merge_per_stage() -> None:
    c = load_cluster("slurm_gpu")
    pre = resources_for(c, "pretrain")
    assert (pre.partition, pre.nodes, pre.gpus_per_node, pre.tasks_per_node) == ("gpu", 2, 8, 8)
    assert resources_for(c, "ingest").gpus_per_node == 0  # from `job:`
    for name in ("slurm_cpu", "slurm_local_test"):
        assert load_cluster(name).name == name


def test_bad_profile_key_or_name_fails_clearly() -> None:
    with pytest.raises(ValueError, match="partitoin"):
        load_cluster("slurm_gpu", ["job.partitoin=x"])
    with pytest.raises(FileNotFoundError, match="known"):
        load_cluster("no_such_profile")


def test_sbatch_parameters_carry_dependency_requeue_and_container() -> None:
    c = load_cluster("slurm_gpu", ["job.container_image=/img.sqsh", "job.container_mounts=/shared:/shared"])
    p = slurm_parameters(resources_for(c, "curate"), "curate", "123", c)
    assert p["dependency"] == "afterok:123"
    assert p["additional_parameters"]["requeue"] is True
    assert "--container-image=/img.sqsh" in p["srun_args"] and "--container-mounts=/shared:/shared" in p["srun_args"]
    assert p["gpus_per_node"] == 1 and p["partition"] == "gpu"
    assert "dependency" not in slurm_parameters(resources_for(c, "ingest"), "ingest", None, c)


def _cfg(stages: list[str], steps: list[str] | None = None):
    d: dict = {"stage": {"stages": stages}}
    if steps is not None:
        d["curate"] = {"steps": steps}
    return OmegaConf.create(d)


def test_plan_turns_curate_into_array_then_merge() -> None:
    c = load_cluster("slurm_local_test", ["embed_tasks=3"])
    over = ["stage=all", "stage.stages=[ingest,curate]", "data_recipe=folder"]
    chain = plan(_cfg(["ingest", "curate"], ["embed", "dedup", "report"]), over, c)
    assert [(j.name, j.tasks) for j in chain] == [("ingest", 1), ("curate_embed", 3), ("curate", 1)]
    assert chain[0].overrides == ["data_recipe=folder", "stage=ingest"]
    assert chain[1].overrides[-2:] == ["stage=curate", "curate.steps=[embed]"]
    assert chain[2].overrides == ["data_recipe=folder", "stage=curate"]
    # embed only: the array is the whole curate job
    only = plan(_cfg(["curate"], ["embed"]), ["stage=curate", "curate.steps=[embed]"], c)
    assert [j.name for j in only] == ["curate_embed"]
    assert only[0].overrides.count("curate.steps=[embed]") == 1
    assert isinstance(only[0], PlannedJob)


def test_parse_args_splits_cluster_from_pipeline() -> None:
    assert parse_args(["cluster=slurm_gpu", "cluster.wait=true", "stage=curate"]) == (
        "slurm_gpu",
        ["wait=true"],
        ["stage=curate"],
    )
    with pytest.raises(SystemExit):
        parse_args(["stage=curate"])


def test_resume_checkpoint_picks_newest(tmp_path) -> None:
    assert resume_checkpoint(tmp_path) is None
    assert next_hpc_path(tmp_path).name == "hpc_ckpt_1.ckpt"
    (tmp_path / "checkpoints").mkdir()
    old = tmp_path / "checkpoints" / "last.ckpt"
    old.write_text("a")
    new = next_hpc_path(tmp_path)
    new.write_text("b")
    import os

    os.utime(old, ns=(1, 1))
    assert resume_checkpoint(tmp_path) == str(new)
    assert next_hpc_path(tmp_path).name == "hpc_ckpt_2.ckpt"


def test_pretrain_job_gets_nodes_and_devices_from_its_resources() -> None:
    c = load_cluster("slurm_gpu")
    cfg = OmegaConf.create({"pretrain": {"trainer": {"num_nodes": 1, "devices": "auto"}}})
    res = resources_for(c, "pretrain")
    assert training_overrides(cfg, res, []) == ["pretrain.trainer.num_nodes=2", "pretrain.trainer.devices=8"]
    assert training_overrides(cfg, res, ["pretrain.trainer.devices=4"]) == ["pretrain.trainer.num_nodes=2"]
    assert training_overrides(OmegaConf.create({}), res, []) == []

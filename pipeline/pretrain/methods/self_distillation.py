"""DINO / DINOv2 self-distillation: student and EMA teacher backbones with lightly's heads and losses.

One class covers the family: ``dino_weight`` (image-level [CLS] distillation over
multi-crop views), ``ibot_weight`` (masked-patch prediction on the global crops)
and ``koleo_weight`` (uniform spread of the student's [CLS] features) switch the
three DINOv2 losses on and off, as DINOv2's own configs do.

The backbone is any timm model. A ViT gives its [CLS] token (and patch tokens for iBOT);
any other model (EfficientNet, ResNet, ConvNeXt) gives its pooled features in place of
[CLS], which is how DINO trains a ResNet-50. iBOT needs patch tokens, so it is a ViT-only
term: a CNN with ``ibot_weight > 0`` is refused.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import cast

import torch
from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss
from lightly.models.modules.heads import DINOProjectionHead
from lightly.models.modules.masked_vision_transformer_timm import MaskedVisionTransformerTIMM
from lightly.models.utils import random_block_mask, update_momentum
from torch import nn

from pipeline.config.pretrain import MethodConfig
from pipeline.models.backbone import is_vit
from pipeline.pretrain.compile import quiet_tensor_copy
from pipeline.pretrain.methods.base import SSLMethod, StepInputs
from pipeline.pretrain.methods.centering import as_logits, check_centering, sinkhorn_knopp_targets, target_probs
from pipeline.pretrain.methods.cls_encoder import encode_cls
from pipeline.pretrain.methods.trunk import encode_tokens, param_dtype


def _twin(src: nn.Module, make: Callable[[], nn.Module]) -> nn.Module:
    dst = make()
    dst.load_state_dict(src.state_dict())
    return dst


def _rows(tokens: torch.Tensor, flat_idx: torch.Tensor) -> torch.Tensor:
    """``tokens[mask]`` for a ``[B, T, D]`` tensor, given the mask's flat indices (no device sync)."""
    return tokens.flatten(0, 1).index_select(0, flat_idx)


def target_entropy(
    teacher_out: torch.Tensor, center: torch.Tensor, temp: float, centering: str = "softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropies of the teacher's DINO targets, both as fractions of their maximum.

    Returns ``(per_image, batch)``: the mean entropy of each image's target over ``log K``,
    and the entropy of the batch's mean target over ``log min(N, K)`` (N images; capped at 1). DINO's two
    failure modes read off them: ``per_image`` near 1 means uniform targets (the teacher
    gives every image the same output and centering flattens it); ``batch`` near 0 means one
    prototype wins for every image. Sharp targets that differ between images (low
    ``per_image``, high ``batch``) are the healthy state. Sinkhorn targets are balanced over
    the batch by construction (``batch`` near 1), but identical teacher outputs still give
    uniform ones.
    """
    return probs_entropy(target_probs(teacher_out, center, temp, centering))


def probs_entropy(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`target_entropy` of ``(N, K)`` target probabilities already computed."""
    n, k = p.shape
    per_image = -(p * p.clamp_min(1e-12).log()).sum(-1).mean() / math.log(k)
    mean = p.mean(0)
    batch = -(mean * mean.clamp_min(1e-12).log()).sum() / math.log(max(2, min(n, k)))
    return per_image, batch.clamp(max=1.0)


def check_cnn_spec(spec: MethodConfig, what: str) -> None:
    """Refuse the settings a backbone without patch tokens cannot honour, naming the key."""
    if spec.ibot_weight > 0:
        raise ValueError(
            f"pretrain.method.ibot_weight={spec.ibot_weight}: iBOT predicts masked patch tokens, which a "
            f"{what} (not a ViT) does not have; use pretrain/method=dino (DINO + KoLeo on pooled features) "
            "or set pretrain.method.ibot_weight=0"
        )
    if spec.param_dtype != "float32":
        raise ValueError(f"pretrain.method.param_dtype={spec.param_dtype!r} applies to ViT blocks; {what} is not a ViT")


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad = False
    module.eval()


class SelfDistillation(SSLMethod):
    """Student/teacher self-distillation on a timm backbone.

    Args:
        vit: A timm model built with ``num_classes=0``: a ViT (with ``dynamic_img_size=True``, local
            crops are smaller than global ones) or a CNN (pooled features; DINO and KoLeo only).
            Its weights (random or pretrained) are kept.
        spec: Loss weights, head sizes, temperatures and masking (``kind`` must be ``self_distillation``).
    """

    has_teacher = True

    def __init__(self, vit: nn.Module, spec: MethodConfig) -> None:
        super().__init__()
        if spec.dino_weight <= 0 and spec.ibot_weight <= 0:
            raise ValueError("pretrain.method: dino_weight and ibot_weight are both 0; nothing to learn")
        self.spec = spec
        self.vit_trunk = is_vit(vit)
        self._dtype = param_dtype(spec.param_dtype)
        self.student: nn.Module
        if self.vit_trunk:
            # "skip": keep timm's init or the loaded weights (continued pretraining).
            self.student = MaskedVisionTransformerTIMM(
                vit, weight_initialization="skip", pos_embed_initialization="skip"
            )
            dim = int(cast(int, vit.embed_dim))
        else:
            check_cnn_spec(spec, type(vit).__name__)
            # channels_last: 2-2.6x faster CNN steps on CPU (oneDNN's preferred layout)
            self.student = vit.to(memory_format=torch.channels_last)
            dim = int(cast(int, vit.num_features))

        def head() -> DINOProjectionHead:
            return DINOProjectionHead(
                dim, spec.hidden_dim, spec.bottleneck_dim, spec.out_dim, batch_norm=spec.head_batch_norm
            )

        self.student_head = head()
        self.student_ibot_head = head() if (spec.ibot_separate_head and spec.ibot_weight > 0) else None
        self.teacher = copy.deepcopy(self.student)
        # weight-normed heads cannot be deep-copied: build twins and copy the weights
        self.teacher_head = _twin(self.student_head, head)
        self.teacher_ibot_head = _twin(self.student_ibot_head, head) if self.student_ibot_head is not None else None
        for m in (self.teacher, self.teacher_head, self.teacher_ibot_head):
            if m is not None:
                _freeze(m)
        check_centering(spec.centering)
        # Sinkhorn targets reach lightly's losses as logits against a center that stays zero
        cm = 1.0 if spec.centering == "sinkhorn" else spec.center_momentum
        self.dino_loss = DINOLoss(spec.out_dim, student_temp=spec.student_temp, center_momentum=cm)
        self.ibot_loss = IBOTPatchLoss(spec.out_dim, student_temp=spec.student_temp, center_momentum=cm)
        self.koleo_loss = KoLeoLoss()
        self._losses_compiled = False
        self._diag: dict[str, torch.Tensor] = {}
        self.train()

    def train(self, mode: bool = True) -> SelfDistillation:
        super().train(mode)
        # As in DINO's use_bn_in_head, the teacher's head normalises with the statistics of its own
        # batch: its running stats are never EMA-updated from the student, so eval-mode BN would
        # stay at its initial identity and undo the point of the option.
        heads = [h for h in (self.teacher_head, self.teacher_ibot_head) if h is not None]
        for m in (m for h in heads for m in h.modules()):
            if isinstance(m, nn.modules.batchnorm._BatchNorm):  # noqa: SLF001 - the base of every BatchNorm
                m.train(mode)
        return self

    def frozen_modules(self) -> list[nn.Module]:
        return [m for m in (self.teacher, self.teacher_head, self.teacher_ibot_head) if m is not None]

    def trainable_modules(self) -> list[nn.Module]:
        return [m for m in (self.student, self.student_head, self.student_ibot_head) if m is not None]

    def backbones(self) -> list[nn.Module]:
        return [self.student_backbone(), self.export_backbone()]

    def student_backbone(self) -> nn.Module:
        return cast(nn.Module, self.student.vit) if self.vit_trunk else self.student

    def export_backbone(self) -> nn.Module:
        return cast(nn.Module, self.teacher.vit) if self.vit_trunk else self.teacher

    def _pooled(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """[CLS] of a ViT, pooled features of any other backbone."""
        if self.vit_trunk:
            return encode_cls(cast(MaskedVisionTransformerTIMM, encoder), images, self._dtype)
        return encoder(images.contiguous(memory_format=torch.channels_last))

    def diagnostics(self) -> dict[str, torch.Tensor]:
        return self._diag

    def _mask(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """iBOT block masks: ``(n, H, W)`` over patches, ``(n, seq_len)`` with prefix tokens kept,
        and the flat indices of the masked tokens in ``(n * seq_len)``.

        The masks are drawn on the CPU and copied over: lightly's ``random_block_mask`` reads
        back a count after every block it tries (``.item()``), which on a GPU is a device sync
        each time, hundreds per step. The flat indices replace boolean indexing of the token
        tensor, which would need one more sync to learn the number of masked tokens.
        """
        vit = self.student_backbone()  # a ViT: iBOT runs on ViTs only
        h, w = cast(tuple[int, int], cast(nn.Module, vit.patch_embed).grid_size)
        s = self.spec
        # Small grids (low-resolution CPU runs): at least one patch per masked image, and
        # blocks of fewer than DINOv2's 4 patches when 4 would not fit.
        lo = max(s.mask_ratio_min, 1.01 / (h * w))
        hi = max(s.mask_ratio_max, lo)
        block = random_block_mask(
            size=(n, h, w),
            batch_mask_ratio=s.mask_probability,
            min_image_mask_ratio=lo,
            max_image_mask_ratio=hi,
            min_num_masks_per_block=max(1, min(4, int(h * w * lo))),
            device="cpu",
        )
        prefix = cast(int, vit.num_prefix_tokens)
        seq = torch.zeros((n, prefix + h * w), dtype=torch.bool)
        seq[:, prefix:] = block.flatten(1)
        idx = seq.flatten().nonzero().squeeze(1)
        on = device.type == "cuda"
        if on:
            block, seq, idx = block.pin_memory(), seq.pin_memory(), idx.pin_memory()
        return block.to(device, non_blocking=on), seq.to(device, non_blocking=on), idx.to(device, non_blocking=on)

    def loss(self, views: list[torch.Tensor], step: StepInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.spec
        ng = step.n_global
        g = torch.cat(views[:ng])
        local = views[ng:]
        use_ibot = s.ibot_weight > 0
        if use_ibot:
            block, seq_mask, idx = self._mask(g.shape[0], g.device)
            use_ibot = idx.numel() > 0  # e.g. a batch of 1 with mask_probability 0.5: no masked patch this step
        t_ibot_head = self.teacher_ibot_head or self.teacher_head
        s_ibot_head = self.student_ibot_head or self.student_head
        dt = self._dtype

        with torch.no_grad():
            if use_ibot:
                t_tokens = encode_tokens(self.teacher, g, dtype=dt)
                t_cls, t_patch_out = t_tokens[:, 0], t_ibot_head(_rows(t_tokens, idx))
            else:  # only the [CLS] token is read: skip the patch tokens' last block
                t_cls, t_patch_out = self._pooled(self.teacher, g), None
            t_cls_out = self.teacher_head(t_cls)

        # a frozen backbone (head warm-up of continued pretraining) needs no backward pass
        with torch.set_grad_enabled(torch.is_grad_enabled() and not step.backbone_frozen):
            if use_ibot:
                s_tokens = encode_tokens(self.student, g, mask=seq_mask, dtype=dt)
                s_cls = s_tokens[:, 0]
            else:
                s_tokens, s_cls = None, self._pooled(self.student, g)
            # local crops only feed the [CLS] loss; one head call for all views (per-sample, or with
            # head_batch_norm statistics over all crops together, as DINO's MultiCropWrapper does)
            s_cls_all = torch.cat([s_cls, self._pooled(self.student, torch.cat(local))]) if local else s_cls
        s_cls_out_all = self.student_head(s_cls_all)

        # compiled loss terms take the temperature as a tensor: a Python float would be baked
        # into the graph, and the warm-up schedule changes it every step
        temp = torch.tensor(step.teacher_temp) if self._losses_compiled else step.teacher_temp
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=g.device)
        if s.dino_weight > 0:
            d, h, hb = self._dino_term(t_cls_out, s_cls_out_all, temp, ng, ng + len(local))
            self._diag = {"teacher_entropy": h, "teacher_batch_entropy": hb}
            parts["dino"] = d.detach()
            total = total + s.dino_weight * d
        if use_ibot:
            assert t_patch_out is not None and s_tokens is not None  # both computed when use_ibot
            i = self._ibot_term(t_patch_out, s_ibot_head(_rows(s_tokens, idx)), block, temp)
            parts["ibot"] = i.detach()
            total = total + s.ibot_weight * i
        if s.koleo_weight > 0:
            k = sum(self.koleo_loss(c.float()) for c in s_cls.chunk(ng)) / ng
            parts["koleo"] = k.detach()
            total = total + s.koleo_weight * k
        return total, parts

    def _dino_term(
        self, t_cls_out: torch.Tensor, s_out: torch.Tensor, temp: float | torch.Tensor, n_global: int, n_views: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """lightly's DINO loss over all views, and the teacher targets' entropies (for the diagnostics)."""
        with torch.no_grad():  # before the loss call, which moves the center
            q = target_probs(t_cls_out, self.dino_loss.center, temp, self.spec.centering)
            h, hb = probs_entropy(q)
        t_in, t_temp = self._teacher_logits(t_cls_out, temp, targets=q)
        d = self.dino_loss(
            teacher_out=list(t_in.chunk(n_global)),
            student_out=list(s_out.float().chunk(n_views)),
            teacher_temp=t_temp,
        )
        return d, h, hb

    def _ibot_term(
        self, t_patch_out: torch.Tensor, s_patch_out: torch.Tensor, block: torch.Tensor, temp: float | torch.Tensor
    ) -> torch.Tensor:
        """lightly's iBOT loss over the masked patches."""
        t_in, t_temp = self._teacher_logits(t_patch_out, temp)
        return self.ibot_loss(teacher_out=t_in, student_out=s_patch_out.float(), mask=block, teacher_temp=t_temp)

    def compile_losses(self, mode: str | None = None) -> None:
        """``torch.compile`` the DINO and iBOT terms (lightly's losses, their casts and the teacher targets).

        Each term makes several full passes over ``(rows, out_dim)`` float32 tensors (casts,
        temperature, softmax, log-softmax, product); the iBOT term's rows are every masked
        patch (about 7,500 x 65,536 values for ViT-B at batch 128). Compiled, they fuse into a
        few kernels. The number of masked patches changes every step: after one recompile,
        dynamo treats it as a dynamic size.
        """
        self._dino_term = quiet_tensor_copy(torch.compile(self._dino_term, mode=mode))  # type: ignore[method-assign]
        self._ibot_term = quiet_tensor_copy(torch.compile(self._ibot_term, mode=mode))  # type: ignore[method-assign]
        self._losses_compiled = True

    def _teacher_logits(
        self, teacher_out: torch.Tensor, temp: float | torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, float | torch.Tensor]:
        """What lightly's loss gets as ``teacher_out`` and ``teacher_temp`` under the chosen centering.

        Sinkhorn runs over all rows at once (both global crops, or all masked patches), as in DINOv2;
        ``targets``, when the caller already computed them for the diagnostics, are not computed again.
        """
        if self.spec.centering == "sinkhorn":
            q = targets if targets is not None else sinkhorn_knopp_targets(teacher_out, temp)
            return as_logits(q), 1.0
        return teacher_out.float(), temp

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        update_momentum(self.student, self.teacher, m=momentum)
        update_momentum(self.student_head, self.teacher_head, m=momentum)
        if self.student_ibot_head is not None:
            update_momentum(self.student_ibot_head, self.teacher_ibot_head, m=momentum)

    def cancel_last_layer_gradients(self) -> None:
        for h in (self.student_head, self.student_ibot_head):
            if h is not None:
                for p in h.last_layer.parameters():
                    p.grad = None

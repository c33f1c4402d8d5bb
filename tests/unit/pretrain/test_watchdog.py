from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from pipeline.pretrain.watchdog import NonFiniteWatchdog


class _Blowup(pl.LightningModule):
    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))
        self.bad_step = bad_step

    def training_step(self, batch, batch_idx):
        loss = (self.w * batch).sum()
        return loss * float("nan") if self.global_step == self.bad_step else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(8, 2), batch_size=1)


def _trainer(tmp_path: Path, cb: pl.Callback, **kw) -> pl.Trainer:
    return pl.Trainer(
        max_steps=6,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        **kw,
    )


def test_stop_names_the_step(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step 3"):
        _trainer(tmp_path, NonFiniteWatchdog("stop")).fit(_Blowup(3))


def test_rollback_restores_last_good_weights(tmp_path: Path) -> None:
    good = _Blowup(99)
    t = _trainer(tmp_path, NonFiniteWatchdog("stop"), enable_checkpointing=True)
    t.fit(good)
    ckpt = tmp_path / "good.ckpt"
    t.save_checkpoint(ckpt)
    model = _Blowup(2)
    wd = NonFiniteWatchdog("rollback", ckpt, max_rollbacks=1)
    _trainer(tmp_path, wd, enable_checkpointing=False).fit(model)
    assert wd.rollbacks == 1 and torch.isfinite(model.w).all()

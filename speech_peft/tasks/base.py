"""``AdapterTask``: the LightningModule every task builds on.

It owns what does not depend on the task: the checkpoint rule (``common.py``), sharding under
``strategy=fsdp``, and what an adapter method asks of training: its optimiser groups (``lr_scale``, no
weight decay), SNIP pruning of sparse adapters on the first training batches, and gradient clipping that
keeps rank-parallel replicas equal. A task adds its model, its loss (``training_loss``) and its metrics,
so every task that takes ``adapter=`` honours every method the same way.
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from ..adapters import snip_prune
from ..adapters.rank_parallel import clip_gradients as clip_rank_parallel
from ..adapters.rank_parallel import rank_parallel_layers
from ..errors import UserError
from .common import load_trained_state, optimizer_groups, save_trained_state
from .sharding import shard_module


def check_data(task_class: type, data: object) -> None:
    """A task's batches come from the data module its ``datamodule`` attribute names (a mismatch fails on the
    first batch with an error about fields, far from the cause)."""
    wanted = getattr(task_class, "datamodule", None)
    if wanted is not None and data is not None and not isinstance(data, wanted):
        raise UserError(f"task {task_class.__name__} takes batches of {wanted.__name__}, but the data config builds "
                        f"{type(data).__name__}: choose a matching data= option")


class AdapterTask(L.LightningModule):
    """A subclass defines ``training_loss`` (the default training and validation steps log it; SNIP scores
    with it) or its own steps."""

    def init_arguments(self) -> dict[str, Any]:
        """The keyword arguments this task was built with (Lightning's CLI adds private ``_`` entries to
        ``hparams``, which the constructor does not take)."""
        return {k: v for k, v in self.hparams.items() if not k.startswith("_")}

    def training_loss(self, batch: Any) -> Tensor:
        """The loss of one training batch already on this module's device, without logging."""
        raise NotImplementedError(f"{type(self).__name__} defines no training_loss, which SNIP pruning scores with")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        if batch is None:  # every input of the batch was bad and skipped (listed in the rejects file)
            return None
        loss = self.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch is not None:
            self.log("val/loss", self.training_loss(batch), prog_bar=True, batch_size=len(batch))

    def on_before_backward(self, loss: Tensor) -> None:
        if not torch.isfinite(loss):  # every later step would be NaN too, and the run would still "finish"
            raise UserError(f"the training loss became {loss.item()} at step {self.global_step} (epoch "
                            f"{self.current_epoch}): lower task.lr or raise trainer.gradient_clip_val; the best "
                            "checkpoint so far is kept")

    def adapter_optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The trainable parameters as AdamW groups, each adapter at the step and decay its method asks."""
        return optimizer_groups(self, lr, weight_decay)

    def on_train_start(self) -> None:
        """Sparse adapters that prune by SNIP saliency are pruned here, on the first training batches."""
        def loss_of(batch: Any) -> Tensor:
            return self.training_loss(self.transfer_batch_to_device(batch, self.device, 0))

        batches = (batch for batch in self.trainer.train_dataloader)  # opened only when there is something to prune
        pruned = snip_prune(self, batches, loss_of)
        if pruned:
            self.print(f"pruned {pruned} sparse adapter(s) by SNIP saliency on the first training batches")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val and rank_parallel_layers(self):  # HD-PiSSA, LTE: replicas must stay equal
            if gradient_clip_algorithm not in (None, "norm"):
                raise UserError("rank-parallel adapters clip gradients by norm only")
            clip_rank_parallel(self, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def setup(self, stage: str) -> None:  # both front ends: speech-peft fit and speech-peft lightning fit
        check_data(type(self), self.trainer.datamodule)

    def configure_model(self) -> None:  # strategy=fsdp: shard the layers across the processes
        shard_module(self)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        save_trained_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        load_trained_state(self, checkpoint)

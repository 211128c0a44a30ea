"""LightningModule around `AutoModelForSequenceClassification`, scored with GLUE's CoLA metric (Matthews corr.)."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import Accuracy, ConfusionMatrix, F1Score, MatthewsCorrCoef
from transformers import get_linear_schedule_with_warmup

from cola_bert import fast_bert
from cola_bert.backbone import LABEL_NAMES, load_model
from cola_bert.data import DOMAINS

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm.weight", "layer_norm.bias")


def _task(num_labels: int) -> dict[str, Any]:
    return {"task": "binary"} if num_labels == 2 else {"task": "multiclass", "num_classes": num_labels}


def _scores(num_labels: int, prefix: str, postfix: str = "", f1: bool = True) -> MetricCollection:
    task = _task(num_labels)
    metrics = {"mcc": MatthewsCorrCoef(**task), "accuracy": Accuracy(**task)}
    if f1:
        metrics["f1"] = F1Score(**task) if num_labels == 2 else F1Score(**task, average="macro")
    # No compute groups: each metric keeps its own update count, which tells an empty domain apart.
    return MetricCollection(metrics, prefix=prefix, postfix=postfix, compute_groups=False)


class CoLAClassifier(pl.LightningModule):
    def __init__(
        self,
        pretrained: str | None,
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.AdamW, lr=5e-5),
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        label_names: Sequence[str] = LABEL_NAMES,
        tiny: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        dropout: float | None = None,
        attention_dropout: float | None = None,
        fuse_qkv: bool = True,
        compact_embeddings: bool = True,
    ):
        """`tokenizer` is recorded with the hyperparameters so a checkpoint says what it was trained with.

        `fuse_qkv` and `compact_embeddings` are same-math speed levers (see `cola_bert.fast_bert`); the saved model
        and checkpoints hold the standard Hugging Face keys either way.
        """
        super().__init__()
        # The optimizer factory is code, not a hyperparameter: keep checkpoints loadable with weights_only=True.
        self.save_hyperparameters(logger=False, ignore=["optimizer"])
        self.optimizer_factory = optimizer
        self.label_names = list(label_names)
        num_labels = len(self.label_names)
        # from_pretrained returns the model in eval mode; fine-tuning wants dropout on.
        self.model = load_model(
            pretrained, self.label_names, tiny=tiny, dropout=dropout, attention_dropout=attention_dropout
        ).train()
        if fuse_qkv:
            fast_bert.fuse_qkv(self.model)

        self.train_loss = MeanMetric()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_scores, self.test_scores = _scores(num_labels, "val/"), _scores(num_labels, "test/")
        self.val_domain_scores = torch.nn.ModuleList(
            _scores(num_labels, "val/", f"_{d}", f1=False) for d in DOMAINS
        )
        self.test_domain_scores = torch.nn.ModuleList(
            _scores(num_labels, "test/", f"_{d}", f1=False) for d in DOMAINS
        )
        self.val_confusion = ConfusionMatrix(**_task(num_labels))
        self.val_mcc_best = MaxMetric()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "domain")}
        logits = self(**inputs)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        return loss, logits.argmax(dim=-1)

    def setup(self, stage: str) -> None:
        """Compact the word embeddings to the tokens of the training data (exact: the other rows only decay)."""
        datamodule = self.trainer.datamodule
        if stage != "fit" or not self.hparams.get("compact_embeddings") or datamodule is None:
            return
        dataset = getattr(datamodule.train_dataloader(), "dataset", None)
        if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
            return
        fast_bert.compact_word_embeddings(self.model, fast_bert.dataset_token_ids(dataset))

    def on_train_start(self) -> None:
        # The sanity check fed the validation metrics: start clean.
        self.val_loss.reset()
        self.val_scores.reset()
        self.val_confusion.reset()
        for metric in self.val_domain_scores:
            metric.reset()
        self.val_mcc_best.reset()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch)
        self.train_loss(loss)
        size = batch["labels"].numel()
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def _eval_step(self, batch, loss_metric, scores, domain_scores, confusion=None) -> None:
        loss, preds = self._step(batch)
        labels = batch["labels"]
        loss_metric.update(loss, weight=labels.numel())
        scores.update(preds, labels)
        if confusion is not None:
            confusion.update(preds, labels)
        for index, metric in enumerate(domain_scores):
            mask = batch["domain"] == index
            if mask.any():
                metric.update(preds[mask], labels[mask])

    def _log_epoch(self, stage: str, loss_metric, scores, domain_scores) -> dict[str, torch.Tensor]:
        values = {f"{stage}/loss": loss_metric.compute(), **scores.compute()}
        for metric in domain_scores:
            if any(m.update_count for m in metric.values()):  # a domain absent from this split stays unreported
                values.update(metric.compute())
        self.log_dict(values, sync_dist=True)
        loss_metric.reset()
        scores.reset()
        for metric in domain_scores:
            metric.reset()
        return values

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_scores, self.val_domain_scores, self.val_confusion)

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val", self.val_loss, self.val_scores, self.val_domain_scores)
        if not self.trainer.sanity_checking:
            self.val_mcc_best(values["val/mcc"])
            self.log("val/mcc_best", self.val_mcc_best.compute(), sync_dist=True)
        self.last_confusion = self.val_confusion.compute().cpu()
        self.val_confusion.reset()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_scores, self.test_domain_scores)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_loss, self.test_scores, self.test_domain_scores)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip directly when gradients are not loss-scaled (fp32, bf16): Lightning's mixed-precision plugin refuses
        to clip for fused optimizers, which is only needed when a GradScaler (16-mixed) scales the gradients."""
        if not gradient_clip_val or getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW without decay on biases/LayerNorm; linear warmup then linear decay, stepped every optimizer step."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if name.endswith(NO_DECAY) else decay).append(param)
        optimizer = self.optimizer_factory(
            params=[
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ]
        )
        fast_bert.track_weight_decay(optimizer, self.model)
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(self.hparams.warmup_ratio * total_steps), total_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

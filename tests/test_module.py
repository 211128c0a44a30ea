"""The LightningModule: it learns, it decays the right parameters, and its schedule steps per optimizer step."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cola_bert.backbone import minilm_path
from cola_bert.data import CoLADataModule, Example, TokenizedDataset
from cola_bert.module import CoLAClassifier

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

SENTENCES = [
    ("The cat sat on the mat.", 1), ("Cat the mat sat on.", 0), ("She reads books every day.", 1),
    ("Reads she every books day.", 0), ("They have left already.", 1), ("Have they left already the.", 0),
    ("John likes Mary.", 1), ("Likes John Mary the the.", 0),
]


def _loader(batch_size=8):
    dm = CoLADataModule(tokenizer=minilm_path())
    from cola_bert.backbone import load_tokenizer

    dm.tokenizer = load_tokenizer(minilm_path())
    dataset = dm._tokenize([Example(s, y) for s, y in SENTENCES])
    return DataLoader(dataset, batch_size=batch_size, collate_fn=dm.collate)


def test_tiny_model_overfits_eight_examples():
    pl.seed_everything(0)
    module = CoLAClassifier(pretrained=None, tiny=TINY,
                            optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3), warmup_ratio=0.0)
    loader = _loader()
    batch = next(iter(loader))
    with torch.no_grad():
        initial_loss, _ = module._step(batch)
    trainer = pl.Trainer(max_epochs=60, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, train_dataloaders=loader)
    module.eval()
    with torch.no_grad():
        loss, preds = module._step(batch)
    assert float(loss) < 0.05 < float(initial_loss)
    assert preds.tolist() == batch["labels"].tolist()


def test_no_weight_decay_on_bias_and_layernorm_and_per_step_warmup():
    module = CoLAClassifier(pretrained=None, tiny=TINY, warmup_ratio=0.25,
                            optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))
    trainer = pl.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(Record())
    trainer.fit(module, train_dataloaders=_loader(batch_size=1))
    decay, no_decay = trainer.optimizers[0].param_groups
    names = {id(p): n for n, p in module.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith(("bias", "LayerNorm.weight")) for p in no_decay["params"])
    assert not any(names[id(p)].endswith(("bias", "LayerNorm.weight")) for p in decay["params"])
    # 8 steps, 2 warmup: 0 -> peak at step 2 -> linear decay to 0.
    assert lrs[0] == 0.0 and abs(lrs[2] - 1e-3) < 1e-12
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))


def test_metrics_are_over_the_whole_epoch_not_the_last_batch():
    """The seed reported the last batch's accuracy; ours aggregates every batch (and per domain)."""
    module = CoLAClassifier(pretrained=None, tiny=TINY)
    preds_all, labels_all = [], []
    for domain, size in ((0, 5), (1, 3)):
        labels = torch.tensor([1, 0, 1, 1, 0][:size])
        preds = torch.tensor([1, 1, 1, 0, 0][:size])
        module.val_scores.update(preds, labels)
        module.val_domain_scores[domain].update(preds, labels)
        preds_all.append(preds)
        labels_all.append(labels)
    values = module.val_scores.compute()
    preds, labels = torch.cat(preds_all), torch.cat(labels_all)
    assert abs(float(values["val/accuracy"]) - float((preds == labels).float().mean())) < 1e-6
    from sklearn.metrics import matthews_corrcoef  # noqa: PLC0415 - only to cross-check torchmetrics

    assert abs(float(values["val/mcc"]) - matthews_corrcoef(labels, preds)) < 1e-6
    assert set(module.val_domain_scores[1].compute()) == {"val/mcc_out_of_domain", "val/accuracy_out_of_domain"}


def test_bf16_mixed_with_fused_adamw_clips_gradients(monkeypatch):
    """The default recipe's combination: fused AdamW + gradient clipping + bf16 autocast on CPU."""
    clips = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        total = real_clip(parameters, max_norm, *args, **kwargs)
        clips.append((max_norm, float(total)))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    module = CoLAClassifier(pretrained=None, tiny=TINY,
                            optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3, fused=True))
    before = module.model.classifier.weight.detach().clone()
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", precision="bf16-mixed", gradient_clip_val=0.5,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, train_dataloaders=_loader(batch_size=4))
    assert [max_norm for max_norm, _ in clips] == [0.5, 0.5, 0.5]
    assert all(total > 0 for _, total in clips)
    assert not torch.equal(before, module.model.classifier.weight)

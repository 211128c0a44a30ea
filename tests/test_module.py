"""The LightningModule: it learns, it decays the right parameters, its schedule steps per optimizer step, and its
validation metrics (overall and per domain) equal scikit-learn's on the same predictions."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cola_bert.backbone import minilm_path
from cola_bert.data import CoLADataModule, Example
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


def _validation_batches(seed: int = 0):
    """60 examples in batches of 16/16/16/12 (the first holds only in-domain sentences), with fixed predictions:
    the model's logits are looked up by the example index carried in `input_ids`."""
    generator = torch.Generator().manual_seed(seed)
    n = 60
    labels = torch.randint(0, 2, (n,), generator=generator)
    domains = torch.cat([torch.zeros(16, dtype=torch.long), torch.randint(0, 2, (n - 16,), generator=generator)])
    # In-domain predictions are right 85% of the time, out-of-domain ones 60%: the two domains score differently.
    right = torch.rand(n, generator=generator) < torch.where(domains == 0, 0.85, 0.6)
    preds = torch.where(right, labels, 1 - labels)
    confidence = 0.5 + 2 * torch.rand(n, generator=generator)
    logits = torch.zeros(n, 2)
    logits[torch.arange(n), preds] = confidence
    batches, start = [], 0
    for size in (16, 16, 16, 12):
        index = torch.arange(start, start + size)
        batches.append({"input_ids": index[:, None], "attention_mask": torch.ones(size, 1, dtype=torch.long),
                        "labels": labels[index], "domain": domains[index]})
        start += size
    return batches, logits, labels, preds, domains


def test_validation_metrics_over_the_epoch_match_scikit_learn():
    """validation_step -> on_validation_epoch_end through Lightning's validate loop, per domain, vs scikit-learn."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, matthews_corrcoef

    batches, logits, labels, preds, domains = _validation_batches()
    module = CoLAClassifier(pretrained=None, tiny=TINY)
    module.forward = lambda input_ids, attention_mask, **kwargs: logits[input_ids[:, 0]]
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(batches, batch_size=None)
    logged = {k: float(v) for k, v in trainer.validate(module, dataloaders=loader, verbose=False)[0].items()}

    y, p = labels.numpy(), preds.numpy()
    expected = {
        "val/mcc": matthews_corrcoef(y, p),
        "val/accuracy": accuracy_score(y, p),
        "val/f1": f1_score(y, p),
        "val/loss": log_loss(y, torch.softmax(logits, dim=-1).numpy()),
    }
    for index, domain in enumerate(("in_domain", "out_of_domain")):
        mask = (domains == index).numpy()
        expected[f"val/mcc_{domain}"] = matthews_corrcoef(y[mask], p[mask])
        expected[f"val/accuracy_{domain}"] = accuracy_score(y[mask], p[mask])
    # The data really separates the domains (a swapped or missing domain mask cannot pass by accident).
    assert expected["val/mcc_in_domain"] - expected["val/mcc_out_of_domain"] > 0.3
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, abs=1e-5), key
    assert module.last_confusion.tolist() == confusion_matrix(y, p).tolist()

    # Epoch-level state is reset: validating again gives the same numbers, not an accumulation.
    again = {k: float(v) for k, v in trainer.validate(module, dataloaders=loader, verbose=False)[0].items()}
    assert again == pytest.approx(logged)


def test_a_domain_absent_from_the_split_is_not_reported():
    batches, logits, *_ = _validation_batches()
    module = CoLAClassifier(pretrained=None, tiny=TINY)
    module.forward = lambda input_ids, attention_mask, **kwargs: logits[input_ids[:, 0]]
    in_domain_only = [{**b, "domain": torch.zeros_like(b["domain"])} for b in batches]
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.validate(module, dataloaders=DataLoader(in_domain_only, batch_size=None), verbose=False)[0]
    assert "val/mcc_in_domain" in logged and not any(k.endswith("_out_of_domain") for k in logged)
    assert float(logged["val/mcc_in_domain"]) == pytest.approx(float(logged["val/mcc"]))


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

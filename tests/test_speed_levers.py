"""Same-math speed levers (cola_bert.fast_bert): fused Q/K/V and compact word embeddings train exactly like the plain
Hugging Face model, and everything saved from them is a standard BertForSequenceClassification."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from cola_bert import fast_bert
from cola_bert.backbone import load_model, load_tokenizer, minilm_path
from cola_bert.data import CoLADataModule, Example
from cola_bert.module import CoLAClassifier

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
NO_DECAY = ("bias", "LayerNorm.weight")
SENTENCES = [
    ("The cat sat on the mat.", 1), ("Cat the mat sat on.", 0), ("She reads books every day.", 1),
    ("Reads she every books day.", 0), ("They have left already.", 1), ("Have they left already the.", 0),
    ("John likes Mary.", 1), ("Likes John Mary the the.", 0),
]


def _tiny(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return load_model(None, tiny=TINY).train()


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 1200, (4, 9), generator=generator)
    mask = torch.ones_like(ids)
    ids[0, 6:], mask[0, 6:] = 0, 0  # padding
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])}


def _adamw(model: torch.nn.Module) -> torch.optim.AdamW:
    named = list(model.named_parameters())
    return torch.optim.AdamW(
        [{"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": 0.1},
         {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0}],
        lr=1e-2,
    )


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert list(a) == list(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_fused_qkv_gives_the_same_logits_and_the_standard_state_dict():
    plain = _tiny().eval()
    fused = copy.deepcopy(plain)
    assert fast_bert.fuse_qkv(fused) == TINY["num_hidden_layers"]
    assert all(isinstance(layer.attention.self, fast_bert.FusedQKVSelfAttention) for layer in fused.bert.encoder.layer)
    batch = _batch()
    with torch.no_grad():
        expected = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = fused(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got_bf16 = fused(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            expected_bf16 = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(got_bf16, expected_bf16, atol=2e-2, rtol=2e-2)
    assert _max_diff(plain.state_dict(), fused.state_dict()) == 0.0
    # A standard state dict loads into the fused model (a changed key query weight reaches the fused matrix).
    state = plain.state_dict()
    key = "bert.encoder.layer.1.attention.self.key.weight"
    state[key] = torch.full_like(state[key], 0.5)
    fused.load_state_dict(state)
    assert torch.equal(fused.bert.encoder.layer[1].attention.self.qkv.weight[32:64], state[key])


def _train(model: torch.nn.Module, steps: int, batch: dict[str, torch.Tensor]) -> list[float]:
    optimizer = _adamw(model)
    fast_bert.track_weight_decay(optimizer, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / (steps + 1))
    losses = []
    for step in range(steps):
        torch.manual_seed(100 + step)  # same dropout masks for both models
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach().item())
    return losses


def test_levers_train_exactly_like_the_plain_model():
    """Dropout on, AdamW with weight decay, clipping, a decaying LR: same losses, same standard weights after."""
    plain = _tiny()
    fast = copy.deepcopy(plain)
    batch = _batch()
    fast_bert.fuse_qkv(fast)
    compact = fast_bert.compact_word_embeddings(fast, batch["input_ids"].flatten().tolist())
    untouched_before = plain.bert.embeddings.word_embeddings.weight[5].detach().clone()
    assert len(compact.rows) == len(set(batch["input_ids"].flatten().tolist()) | {0}) and sum(p.numel() for p in fast.parameters()) < \
        sum(p.numel() for p in plain.parameters()) - 30000 * TINY["hidden_size"]

    plain_losses, fast_losses = _train(plain, 6, batch), _train(fast, 6, batch)

    assert plain_losses[-1] < plain_losses[0]
    assert fast_losses == pytest.approx(plain_losses, abs=1e-5)
    assert _max_diff(plain.state_dict(), fast.state_dict()) < 1e-4
    # Token 5 never occurred: plain AdamW only decayed it (lr_t * 0.1 per step), and so did the compact embedding.
    factor = 1.0
    for step in range(6):
        factor *= 1.0 - 1e-2 * (1.0 - step / 7) * 0.1
    expected_row = untouched_before * factor
    torch.testing.assert_close(plain.bert.embeddings.word_embeddings.weight[5], expected_row)
    torch.testing.assert_close(fast.state_dict()["bert.embeddings.word_embeddings.weight"][5], expected_row)
    # Evaluation reads unseen tokens from the decayed frozen rows.
    plain.eval(), fast.eval()
    unseen = torch.tensor([[101, 5, 17, 2000, 102]])
    with torch.no_grad():
        torch.testing.assert_close(fast(input_ids=unseen).logits, plain(input_ids=unseen).logits, atol=1e-5, rtol=1e-4)


def test_compact_embeddings_refuse_a_training_token_they_were_not_built_for():
    model = _tiny()
    fast_bert.compact_word_embeddings(model, [101, 102, 1000])
    with pytest.raises(RuntimeError, match=r"token ids \[1001\] occur in a training batch"):
        model(input_ids=torch.tensor([[101, 1000, 1001, 102]]))
    with torch.no_grad():  # inference may read any token
        model(input_ids=torch.tensor([[101, 1000, 1001, 102]]))


def test_saved_model_is_a_plain_hugging_face_model(tmp_path):
    model = _tiny()
    fast_bert.fuse_qkv(model)
    fast_bert.compact_word_embeddings(model, range(1000, 1200))
    _train(model, 2, _batch())
    model.eval().save_pretrained(tmp_path)
    keys = load_file(tmp_path / "model.safetensors")
    assert keys["bert.embeddings.word_embeddings.weight"].shape == (30522, TINY["hidden_size"])
    assert "bert.encoder.layer.0.attention.self.query.weight" in keys
    assert not any("qkv" in k or "weight_active" in k for k in keys)
    loaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is BertForSequenceClassification
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids = torch.tensor([[101, 1000, 7, 1100, 102]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(input_ids=ids).logits, model(input_ids=ids).logits)


def test_weight_decay_tracking_refuses_optimizers_where_untouched_rows_would_move():
    model = _tiny()
    fast_bert.compact_word_embeddings(model, range(1000, 1010))
    with pytest.raises(ValueError, match="compact_embeddings=false"):
        fast_bert.track_weight_decay(torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.01), model)
    assert fast_bert.track_weight_decay(torch.optim.SGD(model.parameters(), lr=1e-3), model)


class _Sentences(pl.LightningDataModule):
    def setup(self, stage: str) -> None:
        self.dm = CoLADataModule(tokenizer=minilm_path())
        self.dm.tokenizer = load_tokenizer(minilm_path())
        self.dataset = self.dm._tokenize([Example(s, y) for s, y in SENTENCES])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=4, collate_fn=self.dm.collate)


def _fit(tmp_path, **levers) -> tuple[CoLAClassifier, pl.Trainer]:
    pl.seed_everything(0)
    module = CoLAClassifier(pretrained=None, tiny=TINY, warmup_ratio=0.0, **levers,
                            optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3, fused=True))
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, gradient_clip_val=1.0)
    trainer.fit(module, datamodule=_Sentences())
    return module, trainer


def test_lightning_module_trains_with_the_levers_like_without_and_checkpoints_stay_standard(tmp_path):
    fast, trainer = _fit(tmp_path / "fast")
    plain, _ = _fit(tmp_path / "plain", fuse_qkv=False, compact_embeddings=False)
    embedding = fast.model.get_input_embeddings()
    assert isinstance(embedding, fast_bert.CompactEmbedding)
    assert set(embedding.rows.tolist()) == fast_bert.dataset_token_ids(trainer.datamodule.dataset) | {0}
    assert isinstance(fast.model.bert.encoder.layer[0].attention.self, fast_bert.FusedQKVSelfAttention)
    assert type(plain.model.get_input_embeddings()) is torch.nn.Embedding
    assert _max_diff(fast.model.state_dict(), plain.model.state_dict()) < 1e-5

    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    restored = CoLAClassifier(pretrained=None, tiny=TINY, fuse_qkv=False, compact_embeddings=False)
    restored.load_state_dict(checkpoint["state_dict"])  # strict: the checkpoint holds only standard keys
    assert _max_diff(restored.model.state_dict(), fast.model.state_dict()) == 0.0

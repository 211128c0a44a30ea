"""Same-math speed levers for fine-tuning a Hugging Face BERT: less work per step, identical training.

- `fuse_qkv`: each self-attention layer computes Q, K and V with one GEMM (a single Linear of width 3×hidden) instead
  of three. Forward, gradients and AdamW updates are those of the three Linears (rows of one matrix).
- `compact_word_embeddings`: only the rows of the word-embedding matrix whose tokens occur in the training data are
  trainable parameters (CoLA uses 5.6k of MiniLM's 30.5k rows). Every other row gets an exactly zero gradient at every
  step, so its Adam moments stay zero and AdamW changes it by weight decay only: `row *= 1 - lr_t * weight_decay`. That
  factor is accumulated (`track_weight_decay`) and applied when the row is read, instead of a dense 11.7M-element
  gradient, AdamW update and clipping norm every step.

Both swaps are invisible outside the module: `state_dict()` (Lightning checkpoints, `save_pretrained`) yields the
standard keys and values (`...attention.self.query.weight`, `...word_embeddings.weight`), and `load_state_dict`
accepts them, so `model/` stays a plain `BertForSequenceClassification`.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import BertAttention, BertSelfAttention, eager_attention_forward

log = logging.getLogger(__name__)

_QKV = ("query", "key", "value")


class FusedQKVSelfAttention(BertSelfAttention):
    """`BertSelfAttention` with one `qkv` Linear; its state dict still holds `query`, `key` and `value`."""

    def __init__(self, original: BertSelfAttention):
        nn.Module.__init__(self)
        for name in ("config", "num_attention_heads", "attention_head_size", "all_head_size", "scaling", "dropout",
                     "is_decoder", "is_causal", "layer_idx"):
            setattr(self, name, getattr(original, name))
        linears = [getattr(original, name) for name in _QKV]
        weight = linears[0].weight
        # skip_init: no random initialisation, so the RNG stream (dropout masks) is the plain model's.
        self.qkv = nn.utils.skip_init(nn.Linear, weight.shape[1], 3 * self.all_head_size, device=weight.device,
                                      dtype=weight.dtype)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([linear.weight for linear in linears]))
            self.qkv.bias.copy_(torch.cat([linear.bias for linear in linears]))
        self.train(original.training)
        self.register_state_dict_post_hook(_split_qkv)
        self.register_load_state_dict_pre_hook(_join_qkv)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: Any = None, past_key_values: Any = None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        if cache is not None or past_key_values is not None:
            raise RuntimeError("FusedQKVSelfAttention is for encoders; it has no key/value cache.")
        input_shape = hidden_states.shape[:-1]
        # (..., 3 * heads * head_size) -> 3 × (batch, heads, tokens, head_size): the same views the three Linears give.
        qkv = self.qkv(hidden_states).view(*input_shape, 3, -1, self.attention_head_size)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        output, weights = attention(
            self, query, key, value, attention_mask,
            dropout=0.0 if not self.training else self.dropout.p, scaling=self.scaling, **kwargs,
        )
        return output.reshape(*input_shape, -1).contiguous(), weights


def _split_qkv(module: FusedQKVSelfAttention, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    # The qkv entries are the last ones written so far: re-adding in the Linears' order keeps the standard key order.
    parts = {kind: state_dict.pop(f"{prefix}qkv.{kind}").chunk(3, dim=0) for kind in ("weight", "bias")}
    for index, name in enumerate(_QKV):
        for kind in ("weight", "bias"):
            state_dict[f"{prefix}{name}.{kind}"] = parts[kind][index].clone()


def _join_qkv(module, state_dict: dict, prefix: str, *args: Any) -> None:
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{name}.{kind}" for name in _QKV]
        if all(key in state_dict for key in keys):
            state_dict[f"{prefix}qkv.{kind}"] = torch.cat([state_dict.pop(key) for key in keys])


def fuse_qkv(model: nn.Module) -> int:
    """Swap every BERT self-attention (encoder, no cross-attention) for `FusedQKVSelfAttention`; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, BertAttention) and type(module.self) is BertSelfAttention and \
                not module.is_cross_attention and not module.self.is_decoder:
            module.self = FusedQKVSelfAttention(module.self)
            count += 1
    return count


class CompactEmbedding(nn.Module):
    """An `nn.Embedding` whose trainable rows are `rows` (the tokens seen in training); the others only decay.

    Rows outside `rows` are read as `frozen[id] * decay`, where `decay` is the product of the AdamW weight-decay
    factors of all optimizer steps so far. A training batch holding a token outside `rows` is refused: that row would
    otherwise silently stay untrained.
    """

    def __init__(self, original: nn.Embedding, rows: Iterable[int]):
        super().__init__()
        self.num_embeddings, self.embedding_dim = original.num_embeddings, original.embedding_dim
        self.padding_idx = original.padding_idx
        row_ids = sorted({int(r) for r in rows} | ({self.padding_idx} if self.padding_idx is not None else set()))
        if not row_ids or row_ids[0] < 0 or row_ids[-1] >= self.num_embeddings:
            raise ValueError(f"compact_word_embeddings: token ids must lie in [0, {self.num_embeddings}).")
        weight = original.weight.detach()
        self.register_buffer("rows", torch.tensor(row_ids, dtype=torch.long, device=weight.device), persistent=False)
        remap = torch.full((self.num_embeddings,), -1, dtype=torch.long, device=weight.device)
        remap[self.rows] = torch.arange(len(row_ids), device=weight.device)
        self.register_buffer("remap", remap, persistent=False)
        self.register_buffer("frozen", weight.clone(), persistent=False)
        self.weight_active = nn.Parameter(weight[self.rows].clone())
        self.decay = 1.0
        self.register_state_dict_post_hook(_full_embedding)
        self.register_load_state_dict_pre_hook(_compact_embedding)

    @property
    def weight(self) -> torch.Tensor:
        """The full matrix as `nn.Embedding.weight` would hold it (a copy)."""
        full = self.frozen * self.decay
        full[self.rows] = self.weight_active.detach()
        return full

    def load_full(self, weight: torch.Tensor) -> None:
        with torch.no_grad():
            self.frozen.copy_(weight)
            self.weight_active.copy_(weight[self.rows])
        self.decay = 1.0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        index = self.remap[input_ids]
        seen = index >= 0
        padding = None if self.padding_idx is None else int(self.remap[self.padding_idx])
        if self.training and torch.is_grad_enabled():
            if not bool(seen.all()):
                unseen = sorted(set(input_ids[~seen].tolist()))[:10]
                raise RuntimeError(
                    f"compact word embeddings: token ids {unseen} occur in a training batch but not in the training "
                    "data the embeddings were compacted for. Train with model.compact_embeddings=false, or let the "
                    "module see the same training data at setup."
                )
            return F.embedding(index, self.weight_active, padding)
        active = F.embedding(index.clamp_min(0), self.weight_active, padding)
        return torch.where(seen.unsqueeze(-1), active, F.embedding(input_ids, self.frozen) * self.decay)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, trainable rows={len(self.rows)}"


def _full_embedding(module: CompactEmbedding, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    state_dict.pop(f"{prefix}weight_active")
    state_dict[f"{prefix}weight"] = module.weight


def _compact_embedding(module: CompactEmbedding, state_dict: dict, prefix: str, *args: Any) -> None:
    full = state_dict.pop(f"{prefix}weight", None)
    if full is not None:
        module.load_full(full.to(module.frozen.device, module.frozen.dtype))
        state_dict[f"{prefix}weight_active"] = module.weight_active.detach().clone()


def compact_word_embeddings(model: nn.Module, token_ids: Iterable[int]) -> CompactEmbedding:
    """Replace the model's input embeddings by a `CompactEmbedding` trained only on `token_ids`."""
    original = model.get_input_embeddings()
    if isinstance(original, CompactEmbedding):
        return original
    if type(original) is not nn.Embedding:
        raise TypeError(f"compact_word_embeddings needs an nn.Embedding, got {type(original).__name__}.")
    compact = CompactEmbedding(original, token_ids)
    model.set_input_embeddings(compact)
    return compact


def dataset_token_ids(dataset: Any) -> set[int]:
    """Every `input_ids` value of a map-style dataset whose items are dicts (as tokenized datasets are)."""
    encodings = getattr(dataset, "encodings", None)
    sequences = encodings["input_ids"] if isinstance(encodings, dict) and "input_ids" in encodings else \
        (dataset[i]["input_ids"] for i in range(len(dataset)))
    ids: set[int] = set()
    for sequence in sequences:
        ids.update(int(t) for t in sequence)
    return ids


# Optimizers for which a parameter row with zero gradient and zero state changes by decoupled weight decay only.
_DECOUPLED = (torch.optim.AdamW,)
_ZERO_GRAD_NO_UPDATE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def track_weight_decay(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[CompactEmbedding]:
    """After each `optimizer.step()`, fold `1 - lr * weight_decay` of the step into every `CompactEmbedding`.

    Refuses optimizers for which untouched rows would move otherwise (L2-style weight decay adds a gradient).
    """
    embeddings = [m for m in model.modules() if isinstance(m, CompactEmbedding)]
    groups = []
    for embedding in embeddings:
        group = next((g for g in optimizer.param_groups if any(p is embedding.weight_active for p in g["params"])), None)
        if group is None:  # frozen embeddings: nothing moves, nothing to track
            continue
        decoupled = isinstance(optimizer, _DECOUPLED)
        if not isinstance(optimizer, _ZERO_GRAD_NO_UPDATE) or (group.get("weight_decay", 0) and not decoupled):
            raise ValueError(
                f"model.compact_embeddings=true is exact only for AdamW (or Adam/SGD without weight decay); the "
                f"optimizer is {type(optimizer).__name__} with weight_decay={group.get('weight_decay', 0)}. "
                "Set model.compact_embeddings=false for this optimizer."
            )
        groups.append((embedding, group))

    def fold_decay(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for embedding, group in groups:
            embedding.decay *= 1.0 - float(group["lr"]) * float(group.get("weight_decay", 0.0) or 0.0)

    if groups:
        optimizer.register_step_post_hook(fold_decay)
    return embeddings

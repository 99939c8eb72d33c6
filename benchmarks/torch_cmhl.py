"""The CMHL model in PyTorch, used only as the comparison baseline of the benchmarks.

Same model as `cmhl_jax`: a transformers ``AutoModel`` encoder (BERT/RoBERTa), the first-token
hidden state h with dropout 0.1, three linear heads (emotion 6, valence 3, intensity 2; N(0, 0.02)
kernels, zero biases) and the composite loss of CMHL_SPEC 1.3

    L = CE_emotion + 0.5 CE_valence + 0.5 CE_intensity + 0.4 L_excl

with the valence/intensity maps and the tau matrix taken from
`cmhl_jax.tasks.emotion.affect` (so both frameworks optimise the same objective). AdamW
decays only tensors with ndim >= 2 (no decay on biases and LayerNorm), as
`cmhl_jax.step.weight_decay_mask`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from cmhl_jax.tasks.emotion.affect import build_affect_tables, default_affect_config

HEAD_SIZES = {"emotion": 6, "valence": 3, "intensity": 2}


def affect_tensors(device="cpu") -> dict[str, torch.Tensor]:
    """The loss tables of the default affect config (as `cmhl_jax.losses.loss_tables`)."""
    t = build_affect_tables(default_affect_config())
    return {
        "valence_label": torch.as_tensor(t.valence_label, dtype=torch.long, device=device),
        "intensity_label": torch.as_tensor(t.intensity_label, dtype=torch.long, device=device),
        "pair_mask": torch.as_tensor(t.pair_mask, device=device),
        "tau": torch.as_tensor(t.tau, device=device),
    }


class TorchCMHL(nn.Module):
    """Encoder + dropout on the first-token state + three linear heads."""

    def __init__(self, model_dir, head_sizes=None, head_dropout: float = 0.1, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = transformers.AutoModel.from_pretrained(
            str(model_dir), add_pooling_layer=False
        )
        hidden = self.encoder.config.hidden_size
        self.dropout = nn.Dropout(head_dropout)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(hidden, n) for name, n in sorted((head_sizes or HEAD_SIZES).items())}
        )
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state
        h = self.dropout(hidden[:, 0])
        return {name: head(h) for name, head in self.heads.items()}


def cmhl_loss(logits, labels, tables, alpha=0.5, beta=0.5, lam=0.4):
    """The composite CMHL loss (sum variant), all pairs as one masked [B, C, C] matrix."""
    logits = {k: v.float() for k, v in logits.items()}
    ce_e = F.cross_entropy(logits["emotion"], labels)
    ce_v = F.cross_entropy(logits["valence"], tables["valence_label"][labels])
    ce_i = F.cross_entropy(logits["intensity"], tables["intensity_label"][labels])
    probs = torch.softmax(logits["emotion"], dim=-1)
    scores = probs[:, :, None] + probs[:, None, :]
    hinge = torch.relu(scores - tables["tau"]) * tables["pair_mask"]
    excl = (hinge.sum(dim=(-2, -1)) / tables["pair_mask"].sum()).mean()
    return ce_e + alpha * ce_v + beta * ce_i + lam * excl


def make_optimizer(model: nn.Module, lr=2e-5, weight_decay=0.01, fused: bool | None = None):
    """AdamW with the project's no-decay rule: decay only tensors with ndim >= 2."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = {} if fused is None else {"fused": fused}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, **kwargs)


def make_train_step(
    model, optimizer, tables, *, compile: bool = False, amp_dtype=None, dynamic: bool | None = None
):
    """A train step (forward in train mode, CMHL loss, backward, AdamW); returns the loss.

    `compile`: the forward and loss under `torch.compile` (`dynamic` as torch.compile's: None
    recompiles once per new shape, then marks the changing dimensions dynamic)."""
    device_type = next(model.parameters()).device.type

    def loss_fn(input_ids, attention_mask, labels):
        with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(input_ids, attention_mask)
        return cmhl_loss(logits, labels, tables)

    if compile:
        loss_fn = torch.compile(loss_fn, dynamic=dynamic)

    def step(input_ids, attention_mask, labels):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(input_ids, attention_mask, labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def make_predict(model, *, compile: bool = False, amp_dtype=None):
    """Eval-mode softmax of every head under ``torch.inference_mode``."""
    device_type = next(model.parameters()).device.type

    def forward(input_ids, attention_mask):
        with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(input_ids, attention_mask)
        return {k: torch.softmax(v.float(), dim=-1) for k, v in logits.items()}

    if compile:
        forward = torch.compile(forward)

    def predict(input_ids, attention_mask):
        model.eval()
        with torch.inference_mode():
            return forward(input_ids, attention_mask)

    return predict

"""Encoder-decoder with attention (Bahdanau et al., 2014; Luong et al., 2015) for token sequences.

The encoder (embedding -> GRU, bidirectional by default) reads the source tokens; the decoder (a GRU
cell) writes one token per step from the previous token and a context vector. With ``attention:
additive`` (Bahdanau: ``v . tanh(Wq q + Wk k)``) or ``dot`` (Luong: ``q . k``) the context is an
attention-weighted mean of the encoder outputs, recomputed every step; with ``none`` it is the
encoder's final state only: the classic bottleneck that attention removes.

``num_classes`` is the vocabulary size; one more embedding row is the start-of-sequence token.
Given the target (training), the decoder is teacher-forced; without it, it decodes greedily.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import nn

from dlsuite.models.api import Family, register_model
from dlsuite.models.knobs import Knob


class Attention(nn.Module):
    """Scores of a decoder state ``q`` against encoder outputs ``k``; returns (context, weights)."""

    def __init__(self, kind: str, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "additive":
            self.wq = nn.Linear(hidden, hidden, bias=False)
            self.wk = nn.Linear(hidden, hidden)
            self.v = nn.Linear(hidden, 1, bias=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # q: (B, H), k: (B, L, H)
        if self.kind == "additive":
            scores = self.v(torch.tanh(self.wq(q)[:, None] + self.wk(k))).squeeze(-1)  # (B, L)
        else:
            scores = torch.einsum("bh,blh->bl", q, k)  # (B, L)
        weights = scores.softmax(-1)
        return torch.einsum("bl,blh->bh", weights, k), weights  # (B, H), (B, L)


@register_model("attention_seq2seq", inputs=("tokens",))
class AttentionSeq2Seq(Family, width=64, bidirectional=True, dropout=0.0):
    """Embedding + GRU encoder -> GRU-cell decoder with attention -> per-step token logits.

    Takes ``(L,)`` token inputs over a vocabulary of ``num_classes``; ``out_len`` 0 = input length.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        embed: Annotated[int, Knob("token embedding size", ge=1)] = 32,
        attention: Annotated[str, Knob("attention score", choices=("additive", "dot", "none"))] = "additive",
        out_len: Annotated[int, Knob("tokens to decode without a target (0: the input's length)", ge=0)] = 0,
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        vocab, hidden, bidirectional = num_classes, self.knobs.width, self.knobs.bidirectional
        self.vocab = vocab
        self.out_len = out_len
        self.src_embed = nn.Embedding(vocab, embed)
        self.tgt_embed = nn.Embedding(vocab + 1, embed)  # row ``vocab`` = start of sequence
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=bidirectional)
        dirs = 2 if bidirectional else 1
        # Encoder outputs and its final state are mapped to the decoder's size once.
        self.bridge = nn.Linear(dirs * hidden, hidden)
        self.keys = nn.Linear(dirs * hidden, hidden) if attention != "none" else None
        self.attention = Attention(attention, hidden) if attention != "none" else None
        self.decoder = nn.GRUCell(embed + hidden, hidden)
        self.dropout = nn.Dropout(self.knobs.dropout)
        self.out = nn.Linear(2 * hidden, vocab)
        self.last_attention: torch.Tensor | None = None  # (B, T, L) of the last forward, for plots

    def forward(self, src: torch.Tensor, tgt: torch.Tensor | None = None) -> torch.Tensor:
        """Token logits ``(B, T, vocab)``; teacher-forced on ``tgt`` ``(B, T)`` when given."""
        enc, h_n = self.encoder(self.dropout(self.src_embed(src)))  # (B, L, dirs*H), (dirs, B, H)
        keys = self.keys(enc) if self.keys is not None else enc  # (B, L, H)
        h = torch.tanh(self.bridge(h_n.transpose(0, 1).flatten(1)))  # (B, H)
        final_context = h
        steps = tgt.shape[1] if tgt is not None else self.out_len or src.shape[1]
        prev = torch.full((len(src),), self.vocab, dtype=torch.long, device=src.device)  # start token
        logits, attn = [], []
        for t in range(steps):
            if self.attention is not None:
                context, w = self.attention(h, keys)  # (B, H), (B, L)
                attn.append(w)
            else:
                context = final_context
            h = self.decoder(torch.cat([self.dropout(self.tgt_embed(prev)), context], -1), h)  # (B, H)
            step = self.out(self.dropout(torch.cat([h, context], -1)))  # (B, vocab)
            logits.append(step)
            prev = tgt[:, t] if tgt is not None else step.argmax(-1)
        self.last_attention = torch.stack(attn, 1).detach() if attn else None
        return torch.stack(logits, 1)  # (B, T, vocab)

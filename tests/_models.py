"""Small models the tests share (kept here so each is written once)."""

import torch
from torch import nn


class TinyViT(nn.Module):
    """Tokens (N, T, 4) → linear embedding → a 2-layer ``nn.TransformerEncoder`` (LayerNorm and
    attention inside) → mean over tokens → (optionally) LayerNorm → linear head (3 outputs)."""

    def __init__(self, d=8, seed=0, final_norm=False):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Linear(4, d)
        layer = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d) if final_norm else nn.Identity()
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        return self.head(self.norm(self.encoder(self.embed(x)).mean(1)))

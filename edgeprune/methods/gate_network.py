"""A small gating network for ``pl-gates`` (``gates=network``): gate logits from pooled activations.

The paper (Chen et al., ICLR 2023) trains "a gating network" with the model that masks poorly
behaved nodes; its architecture is not given. Ours (reconstruction):

* input: the batch's activations pooled to a small descriptor -- images / feature maps
  ``(N, C, H, W)`` are average-pooled to ``C x 4 x 4``, sequences ``(N, C, L)`` to ``C x 16``,
  vectors are used as they are -- so the network sees the same pooled features on any input size;
* a two-layer MLP (``hidden`` units, ReLU) gives one logit offset per gated node and per gated
  residual branch; the offsets are averaged over the batch and added to the free per-node logits.
  The last layer starts at zero, so training starts exactly where the free-logit gates start.

The gates are per *batch*, not per sample: edgeprune applies a gate where the channel is consumed,
as a scale of the consumer's weights (:class:`~edgeprune.surgery.masking.ChannelMasks`), and one
weight tensor serves the whole batch. Deployment needs a static network anyway: the plan is made
from the gates' statistics on calibration data (:func:`calibration_logits`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pooled(x: torch.Tensor) -> torch.Tensor:
    """``(N, features)``: a fixed-size pooled descriptor of a batch of activations."""
    if x.dim() == 4:
        x = F.adaptive_avg_pool2d(x, 4)
    elif x.dim() == 3:
        x = F.adaptive_avg_pool1d(x, 16)
    return x.reshape(len(x), -1)


class GateNetwork(nn.Module):
    """Pooled activations -> batch-mean logit offsets ``(delta_nodes, delta_branches)``."""

    def __init__(self, example: torch.Tensor, n_nodes: int, n_branches: int, hidden: int = 32):
        super().__init__()
        d = pooled(example[:1]).shape[1]
        self.n_nodes, self.n_branches = int(n_nodes), int(n_branches)
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, self.n_nodes + self.n_branches))
        nn.init.zeros_(self.body[2].weight)
        nn.init.zeros_(self.body[2].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.body(pooled(x).to(self.body[0].weight.dtype)).mean(0)
        return out[: self.n_nodes], out[self.n_nodes:]


@torch.no_grad()
def calibration_logits(gnet: GateNetwork, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean logit offsets of the gating network over calibration batches of ``x`` (and how many batches).

    The static plan keeps the nodes whose gate is open on the calibration data: with the
    offsets averaged over batches of the size used in training, the free logit plus this mean
    is the node's typical logit, the quantity the plan ranks and thresholds."""
    dn = torch.zeros(gnet.n_nodes)
    db = torch.zeros(gnet.n_branches)
    n = 0
    for i in range(0, len(x), batch):
        a, b = gnet(x[i : i + batch])
        dn += a
        db += b
        n += 1
    return dn / max(n, 1), db / max(n, 1), n

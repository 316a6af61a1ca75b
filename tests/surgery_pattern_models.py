"""Small models (written here) reproducing the patterns that real model zoos use around prunable layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin, cout, k=3, **kw):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=kw.pop("padding", k // 2 if isinstance(k, int) else 0), **kw),
                         nn.BatchNorm2d(cout), nn.ReLU())


class PReLUNet(nn.Module):
    """Per-channel PReLU (weight of size C) after conv+BN, twice, then a head."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1, self.a1 = nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.PReLU(12)
        self.c2, self.b2, self.a2 = nn.Conv2d(12, 16, 3, padding=1), nn.BatchNorm2d(16), nn.PReLU(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.a1(self.b1(self.c1(x)))
        x = self.a2(self.b2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


class LayerScaleBlock(nn.Module):
    """ConvNeXt-style ``x + gamma * f(x)`` with a per-channel parameter gamma of shape (C, 1, 1)."""

    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pw1 = nn.Conv2d(c, 2 * c, 1)
        self.pw2 = nn.Conv2d(2 * c, c, 1)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1) + 0.5)

    def forward(self, x):
        return x + self.gamma * self.pw2(F.gelu(self.pw1(self.dw(x))))


class LayerScaleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 12, 3, padding=1)
        self.block = LayerScaleBlock(12)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


class ChannelsLastFlatten(nn.Module):
    """permute(0, 2, 3, 1) before flatten: the Linear's columns are ordered (h, w, c)."""

    def __init__(self, transpose: bool = False):
        super().__init__()
        self.transpose = transpose
        self.conv = cbr(1, 12)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = cbr(12, 10)
        self.fc = nn.Linear(4 * 4 * 10, 10)

    def forward(self, x):
        x = self.conv2(self.pool(self.conv(x)))
        x = x.transpose(1, 3) if self.transpose else x.permute(0, 2, 3, 1)  # (N, W, H, C) / (N, H, W, C)
        return self.fc(torch.flatten(x, 1))


class HardCodedView576(nn.Module):
    """``x.view(-1, 576)``: a width hard-coded in forward (36 channels x 4 x 4)."""

    def __init__(self):
        super().__init__()
        self.conv = cbr(1, 36)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(576, 10)

    def forward(self, x):
        x = self.pool(self.conv(x))
        return self.fc(x.view(-1, 576))


class TwoOutputs(nn.Module):
    """A trunk and two heads returning a tuple (classification logits, a 5-value regression)."""

    def __init__(self):
        super().__init__()
        self.trunk = cbr(1, 16)
        self.mid = cbr(16, 24)
        self.cls = nn.Linear(24, 10)
        self.reg = nn.Linear(24, 5)

    def forward(self, x):
        f = self.mid(self.trunk(x)).mean((2, 3))
        return self.cls(f), self.reg(f)


class MiscPatterns(nn.Module):
    """(k, 1) and (1, k) kernels, BN after ReLU, MaxPool(ceil_mode), nested Sequentials, F.relu, torch.cat, softmax."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Sequential(nn.Conv2d(1, 10, (3, 1), padding=(1, 0)), nn.ReLU(), nn.BatchNorm2d(10)))
        self.b = nn.Conv2d(10, 8, (1, 3), padding=(0, 1))
        self.c = nn.Conv2d(10, 6, 1)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.d = nn.Sequential(nn.Conv2d(14, 12, 3, padding=1), nn.Sequential(nn.BatchNorm2d(12)))
        self.fc = nn.Linear(12 * 4 * 4, 10)

    def forward(self, x):
        x = self.a(x)
        x = torch.cat([F.relu(self.b(x)), F.relu(self.c(x))], 1)
        x = F.relu(self.d(self.pool(x)))
        return F.softmax(self.fc(x.flatten(1)), dim=1)


class PReLUTwoOutputsChannelsLast(nn.Module):
    """The build example: per-channel PReLU, a channels-last flatten and two outputs."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1, self.a1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.PReLU(16)
        self.pool = nn.MaxPool2d(2)
        self.c2, self.b2, self.a2 = nn.Conv2d(16, 12, 3, padding=1), nn.BatchNorm2d(12), nn.PReLU(12)
        self.fc = nn.Linear(4 * 4 * 12, 32)
        self.cls = nn.Linear(32, 10)
        self.aux = nn.Linear(32, 3)

    def forward(self, x):
        x = self.pool(self.a1(self.b1(self.c1(x))))
        x = self.a2(self.b2(self.c2(x)))
        f = F.relu(self.fc(x.permute(0, 2, 3, 1).flatten(1)))
        return self.cls(f), self.aux(f)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (as torchvision's and timm's LayerNorm2d)."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dwconv -> channels last -> LayerNorm -> Linear -> GELU -> Linear -> channels first -> layer scale -> + x."""

    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1) + 0.5)

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.pw2(F.gelu(self.pw1(y))).permute(0, 3, 1, 2)
        return x + self.gamma * y


class TinyConvNeXt(nn.Module):
    """LayerNorms over pruned channels (channels-last and LayerNorm2d), a per-channel layer scale."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 12, 2, stride=2), LayerNorm2d(12))
        self.block = ConvNeXtBlock(12)
        self.down = nn.Sequential(LayerNorm2d(12), nn.Conv2d(12, 20, 2, stride=2))
        self.block2 = ConvNeXtBlock(20)
        self.head = nn.Sequential(LayerNorm2d(20), nn.Flatten(1), nn.Linear(20 * 2 * 2, 10))

    def forward(self, x):
        return self.head(self.block2(self.down(self.block(self.stem(x)))))


class TinyViT(nn.Module):
    """Patches -> tokens (transpose), a class token and a position embedding on the channels, a
    MultiheadAttention block and an MLP block with LayerNorms, the class token to the head."""

    def __init__(self, d=16, hidden=32):
        super().__init__()
        self.patch = nn.Conv2d(1, d, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 17, d) * 0.1)
        self.ln1, self.attn = nn.LayerNorm(d), nn.MultiheadAttention(d, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.ln2(x))
        return self.head(x[:, 0])


def channel_shuffle(x, groups=2):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2's unit: split the channels, transform one half (1x1, depthwise, 1x1), concat, shuffle."""

    def __init__(self, c, mid):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(c // 2, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(),
                                    nn.Conv2d(mid, mid, 3, padding=1, groups=mid), nn.BatchNorm2d(mid),
                                    nn.Conv2d(mid, c // 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU())

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch(x2)), dim=1))


class TinyShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(1, 16)
        self.b1, self.b2 = ShuffleBlock(16, 12), ShuffleBlock(16, 10)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.b2(self.b1(self.stem(x))).mean((2, 3)))


class HeadSplitAttention(nn.Module):
    """timm's Attention: one qkv Linear split into heads by reshape + permute, heads merged by transpose + reshape."""

    def __init__(self, d, heads=2):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TinyTimmViT(nn.Module):
    """Patch tokens (flatten + transpose), a position embedding, head-split attention and an MLP, mean-pooled."""

    def __init__(self, d=16, hidden=32):
        super().__init__()
        self.patch = nn.Conv2d(1, d, 2, stride=2)
        self.pos = nn.Parameter(torch.randn(1, 16, d) * 0.1)
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), HeadSplitAttention(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return self.head(x.mean(1))


class ChannelPadBlock(nn.Module):
    """ReXNet's residual onto the first channels of a wider output: cat([y[:, :c] + x, y[:, c:]])."""

    def __init__(self, c, cout):
        super().__init__()
        self.c, self.body = c, nn.Sequential(cbr(c, 2 * c, 1), nn.Conv2d(2 * c, cout, 1), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.body(x)
        return torch.cat([y[:, : self.c] + x, y[:, self.c:]], dim=1)


class GhostModule(nn.Module):
    """GhostNet's module: a 1x1 conv, a cheap depthwise conv of its output, both concatenated, sliced to ``out``."""

    def __init__(self, cin, out):
        super().__init__()
        init = (out + 1) // 2
        self.out, self.primary = out, cbr(cin, init, 1)
        self.cheap = nn.Sequential(nn.Conv2d(init, init, 3, padding=1, groups=init), nn.BatchNorm2d(init), nn.ReLU())

    def forward(self, x):
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)[:, : self.out]


class GhostAndPad(nn.Module):
    """A GhostNet bottleneck (two ghost modules, the residual added in place into the slice) and a ReXNet block."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(1, 8)
        self.ghost1, self.ghost2 = GhostModule(8, 12), GhostModule(12, 8)
        self.pad = ChannelPadBlock(8, 14)
        self.head = nn.Sequential(cbr(14, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 10))

    def forward(self, x):
        x = self.stem(x)
        y = self.ghost2(self.ghost1(x))
        y += x  # in place into the slice's view
        return self.head(self.pad(y))


PATTERN_MODELS = {
    "prelu": PReLUNet,
    "layer_scale": LayerScaleNet,
    "permute_flatten": ChannelsLastFlatten,
    "transpose_flatten": lambda: ChannelsLastFlatten(transpose=True),
    "hard_coded_view": HardCodedView576,
    "two_outputs": TwoOutputs,
    "misc": MiscPatterns,
    "build_example": PReLUTwoOutputsChannelsLast,
    "convnext": TinyConvNeXt,
    "attention": TinyViT,
    "shuffle": TinyShuffleNet,
    "head_split": TinyTimmViT,
    "ghost_and_pad": GhostAndPad,
}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and PReLU slopes, so a wrong channel mapping cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    return model.eval()

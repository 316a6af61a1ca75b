"""A user's two-output network (defined outside edgeprune): per-channel PReLU, a channels-last flatten
into a Linear, and two heads. ``edgeprune build`` trains, prunes and scores the FIRST output (the
10-class logits); the second (a 2-value auxiliary head) is compacted, exported and verified with it.

    edgeprune build --model examples/multi_output/two_heads.py:make_net --dataset digits
"""

from torch import nn
from torch.nn import functional as F


class TwoHeads(nn.Module):
    def __init__(self, in_ch: int = 1, side: int = 8, width: int = 16, classes: int = 10, aux: int = 2):
        super().__init__()
        self.c1, self.b1, self.a1 = nn.Conv2d(in_ch, width, 3, padding=1), nn.BatchNorm2d(width), nn.PReLU(width)
        self.pool = nn.MaxPool2d(2)
        self.c2, self.b2, self.a2 = nn.Conv2d(width, 12, 3, padding=1), nn.BatchNorm2d(12), nn.PReLU(12)
        self.fc = nn.Linear((side // 2) ** 2 * 12, 32)
        self.cls = nn.Linear(32, classes)  # output 0: the task output (loss, metric, pruning)
        self.aux = nn.Linear(32, aux)  # output 1: an auxiliary head, carried through every stage

    def forward(self, x):
        x = self.pool(self.a1(self.b1(self.c1(x))))
        x = self.a2(self.b2(self.c2(x)))
        f = F.relu(self.fc(x.permute(0, 2, 3, 1).flatten(1)))  # channels-last: columns ordered (h, w, c)
        return self.cls(f), self.aux(f)


def make_net(width: int = 16, side: int = 8, in_ch: int = 1) -> nn.Module:
    return TwoHeads(in_ch, side, width)

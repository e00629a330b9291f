"""The Inception modules of Inception-v3, one class per figure of the paper.

Names of modules and parameters are torchvision's, so a torchvision state_dict maps onto these
classes by a change of layout only. Every block takes an optional ``taps`` dictionary: when given,
the output of each branch is stored in it under ``"<prefix>.<branch>"``; when ``None`` (the
default) nothing is recorded and nothing extra is computed. ``replace`` does the reverse: a branch
whose key is in it is replaced by the given array, so gradients can be taken with respect to a
branch's output (Grad-CAM).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .layers import (
    BasicConv2d,
    BatchNorm,
    avg_pool,
    avg_pool_3x3_same,
    global_average_pool,
    max_pool,
)

Taps = dict[str, mx.array]


class _Block(nn.Module):
    def _branch(
        self, name: str, value: mx.array, taps: Taps | None, replace: Taps | None, prefix: str
    ) -> mx.array:
        key = f"{prefix}.{name}"
        if replace is not None and key in replace:
            value = replace[key]
        if taps is not None:
            taps[key] = value
        return value

    def _pool(self, x: mx.array) -> mx.array:
        return avg_pool_3x3_same(x, self.pool_count_include_pad)


class InceptionA(_Block):
    """Figure 5: the 5x5 convolution factorised into two 3x3 ones (35x35 grid, Mixed_5b-5d).

    torchvision departs from the figure: its ``branch5x5`` keeps one real 5x5 convolution
    (48 -> 64), as Google's released checkpoint does; only ``branch3x3dbl`` is the figure's pair.
    """

    def __init__(self, in_channels: int, pool_features: int, pool_count_include_pad: bool = True):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)
        self.pool_count_include_pad = pool_count_include_pad

    def __call__(self, x: mx.array, taps: Taps | None = None, replace: Taps | None = None,
                 prefix: str = "") -> mx.array:
        b1 = self._branch("branch1x1", self.branch1x1(x), taps, replace, prefix)
        b5 = self._branch(
            "branch5x5", self.branch5x5_2(self.branch5x5_1(x)), taps, replace, prefix
        )
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        b3 = self._branch("branch3x3dbl", b3, taps, replace, prefix)
        bp = self._branch("branch_pool", self.branch_pool(self._pool(x)), taps, replace, prefix)
        return mx.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """Figure 10: grid reduction 35x35 -> 17x17 by parallel stride-2 convolution and pooling.

    As in torchvision, the stride-2 paths are a 3x3 convolution (384) and a double 3x3 (96),
    beside a 3x3/2 max-pool; the figure draws the idea, not these widths.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def __call__(self, x: mx.array, taps: Taps | None = None, replace: Taps | None = None,
                 prefix: str = "") -> mx.array:
        b3 = self._branch("branch3x3", self.branch3x3(x), taps, replace, prefix)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bd = self._branch("branch3x3dbl", bd, taps, replace, prefix)
        bp = self._branch("branch_pool", max_pool(x, 3, 2), taps, replace, prefix)
        return mx.concatenate([b3, bd, bp], axis=-1)


class InceptionC(_Block):
    """Figure 6: n x n convolutions factorised into 1 x n and n x 1 (n = 7, 17x17 grid).

    ``channels_7x7`` is the width inside the factorised branches (128, 160, 160, 192 for
    Mixed_6b..6e); the figure leaves the widths open.
    """

    def __init__(self, in_channels: int, channels_7x7: int, pool_count_include_pad: bool = True):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)
        self.pool_count_include_pad = pool_count_include_pad

    def __call__(self, x: mx.array, taps: Taps | None = None, replace: Taps | None = None,
                 prefix: str = "") -> mx.array:
        b1 = self._branch("branch1x1", self.branch1x1(x), taps, replace, prefix)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7 = self._branch("branch7x7", b7, taps, replace, prefix)
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bd = self._branch("branch7x7dbl", bd, taps, replace, prefix)
        bp = self._branch("branch_pool", self.branch_pool(self._pool(x)), taps, replace, prefix)
        return mx.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """Figure 10 again: grid reduction 17x17 -> 8x8 (Mixed_7a).

    torchvision's widths: 1x1 (192) -> 3x3/2 (320); 1x1 (192) -> 1x7 -> 7x1 -> 3x3/2 (192);
    3x3/2 max-pool.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def __call__(self, x: mx.array, taps: Taps | None = None, replace: Taps | None = None,
                 prefix: str = "") -> mx.array:
        b3 = self._branch("branch3x3", self.branch3x3_2(self.branch3x3_1(x)), taps, replace, prefix)
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(b7))
        b7 = self._branch("branch7x7x3", b7, taps, replace, prefix)
        bp = self._branch("branch_pool", max_pool(x, 3, 2), taps, replace, prefix)
        return mx.concatenate([b3, b7, bp], axis=-1)


class InceptionE(_Block):
    """Figure 7: the expanded filter bank of the 8x8 grid (Mixed_7b, Mixed_7c).

    The 3x3 convolutions split into parallel 1x3 and 3x1 outputs that are concatenated, so each
    of ``branch3x3`` and ``branch3x3dbl`` gives 768 channels. torchvision (and this port) use an
    average pool in Mixed_7c too; Google's original graph max-pools there (pytorch-fid does).
    """

    def __init__(self, in_channels: int, pool_count_include_pad: bool = True,
                 pool: str = "avg"):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)
        self.pool_count_include_pad = pool_count_include_pad
        self.pool = pool

    def _pool(self, x: mx.array) -> mx.array:
        if self.pool == "max":
            return nn.MaxPool2d(3, 1, padding=1)(x)
        return super()._pool(x)

    def __call__(self, x: mx.array, taps: Taps | None = None, replace: Taps | None = None,
                 prefix: str = "") -> mx.array:
        b1 = self._branch("branch1x1", self.branch1x1(x), taps, replace, prefix)
        b3 = self.branch3x3_1(x)
        b3 = mx.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        b3 = self._branch("branch3x3", b3, taps, replace, prefix)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = mx.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        bd = self._branch("branch3x3dbl", bd, taps, replace, prefix)
        bp = self._branch("branch_pool", self.branch_pool(self._pool(x)), taps, replace, prefix)
        return mx.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nn.Module):
    """Figure 8: the auxiliary classifier on the 17x17 grid (Mixed_6e), used in training.

    5x5/3 average pool -> 1x1 conv (128) -> 5x5 conv (768) -> global mean -> fc. It needs a
    grid of at least 17x17 (inputs of 299 pixels with the default stem). ``batch_norm=True`` is
    the paper's "BN-auxiliary" (section 10, Table 3), which torchvision does not build: see below.
    """

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool = False):
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, 1)
        # torchvision sets ``conv1.stddev = 0.01`` on the BasicConv2d, where its init never looks,
        # so that convolution is drawn with 0.1 like the others; matched here.
        self.conv1 = BasicConv2d(128, 768, 5)
        # "BN-auxiliary refers to the version in which the fully connected layer of the
        # auxiliary classifier is also batch-normalized, not just the convolutions" (section 10).
        # The convolutions (the figure's first fully connected layer is conv1, a 5x5 convolution
        # over the 5x5 grid) are BasicConv2d's already; what is left is ``fc``. A batch-normalised
        # layer normalises its output Wu, not its input u (Ioffe & Szegedy 2015, section 3.2),
        # so ``fc_bn`` follows ``fc``, whose bias it would cancel: ``fc`` then has none, as the
        # convolutions before a BatchNorm have none.
        self.fc = nn.Linear(768, num_classes, bias=not batch_norm)
        if batch_norm:
            self.fc_bn = BatchNorm(num_classes)
        # torchvision draws the plain head's fc with 0.001 so its first logits are near zero.
        # Behind a BatchNorm the scale of W cancels in the forward pass and only divides the
        # gradient, so the normalised fc is drawn like every other normalised layer (0.1).
        self.fc_stddev = 0.1 if batch_norm else 0.001

    def __call__(self, x: mx.array) -> mx.array:
        if x.shape[1] < 17 or x.shape[2] < 17:
            raise ValueError(
                f"the auxiliary classifier needs a 17x17 grid, got {x.shape[1]}x{x.shape[2]}: "
                "use inputs of at least 299x299 (151 or 79 with that stem) or a model without "
                "aux_logits"
            )
        x = avg_pool(x, 5, 3)
        x = self.conv0(x)
        x = self.conv1(x)
        x = global_average_pool(x)
        x = self.fc(x)
        if "fc_bn" in self:
            x = self.fc_bn(x)
        return x

"""The Inception modules of Inception-v3, one class per figure of the paper.

Names of modules and parameters are torchvision's, so a torchvision state_dict maps onto these
classes by a change of layout only. As in torchvision, each block's ``branches`` computes the
figure once and returns its branch outputs, named and in order; calling the block concatenates
them along the channels.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .layers import AvgPool2d, AvgPool3x3, BasicConv2d, BatchNorm, MaxPool2d, global_average_pool


class InceptionBlock(nn.Module):
    """An Inception module: the channel-wise concatenation of :meth:`branches`."""

    def branches(self, x: mx.array) -> dict[str, mx.array]:
        raise NotImplementedError

    def __call__(self, x: mx.array) -> mx.array:
        return mx.concatenate(list(self.branches(x).values()), axis=-1)


class InceptionA(InceptionBlock):
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
        self.pool = AvgPool3x3(pool_count_include_pad)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def branches(self, x: mx.array) -> dict[str, mx.array]:
        return {
            "branch1x1": self.branch1x1(x),
            "branch5x5": self.branch5x5_2(self.branch5x5_1(x)),
            "branch3x3dbl": self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            "branch_pool": self.branch_pool(self.pool(x)),
        }


class InceptionB(InceptionBlock):
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
        self.pool = MaxPool2d(3, 2)

    def branches(self, x: mx.array) -> dict[str, mx.array]:
        return {
            "branch3x3": self.branch3x3(x),
            "branch3x3dbl": self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            "branch_pool": self.pool(x),
        }


class InceptionC(InceptionBlock):
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
        self.pool = AvgPool3x3(pool_count_include_pad)
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def branches(self, x: mx.array) -> dict[str, mx.array]:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        return {
            "branch1x1": self.branch1x1(x),
            "branch7x7": b7,
            "branch7x7dbl": bd,
            "branch_pool": self.branch_pool(self.pool(x)),
        }


class InceptionD(InceptionBlock):
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
        self.pool = MaxPool2d(3, 2)

    def branches(self, x: mx.array) -> dict[str, mx.array]:
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        return {
            "branch3x3": self.branch3x3_2(self.branch3x3_1(x)),
            "branch7x7x3": self.branch7x7x3_4(self.branch7x7x3_3(b7)),
            "branch_pool": self.pool(x),
        }


class InceptionE(InceptionBlock):
    """Figure 7: the expanded filter bank of the 8x8 grid (Mixed_7b, Mixed_7c).

    The 3x3 convolutions split into parallel 1x3 and 3x1 outputs that are concatenated, so each
    of ``branch3x3`` and ``branch3x3dbl`` gives 768 channels. torchvision (and this port) use an
    average pool in Mixed_7c too; Google's original graph max-pools there (``pool="max"``, as
    pytorch-fid's FID network does).
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
        if pool == "max":
            self.pool = MaxPool2d(3, 1, padding=1)
        else:
            self.pool = AvgPool3x3(pool_count_include_pad)
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def branches(self, x: mx.array) -> dict[str, mx.array]:
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return {
            "branch1x1": self.branch1x1(x),
            "branch3x3": mx.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1),
            "branch3x3dbl": mx.concatenate(
                [self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1
            ),
            "branch_pool": self.branch_pool(self.pool(x)),
        }


class InceptionAux(nn.Module):
    """Figure 8: the auxiliary classifier on the 17x17 grid (Mixed_6e), used in training.

    5x5/3 average pool -> 1x1 conv (128) -> 5x5 conv (768) -> global mean -> fc. It needs a
    grid of at least 17x17 (inputs of 299 pixels with the default stem). ``batch_norm=True`` is
    the paper's "BN-auxiliary" (section 10, Table 3), which torchvision does not build: see below.
    """

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool = False):
        super().__init__()
        self.pool = AvgPool2d(5, 3)
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
        x = self.conv1(self.conv0(self.pool(x)))
        x = self.fc(global_average_pool(x))
        return self.fc_bn(x) if "fc_bn" in self else x

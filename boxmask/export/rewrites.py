"""Export-time rewrites: the same arithmetic as the eager model, in operators ONNX Runtime runs fast.

Profiling the paper-width decoder on CPU (``benchmarks/runtime.py --profile``, docs/benchmarks.md)
showed two operators that cost far more than their arithmetic:

- the level merge of torchvision's ``MultiScaleRoIAlign`` when traced
  (``torchvision.ops.poolers._onnx_merge_levels``): a zero tensor and one ``ScatterElements``
  per FPN level, each rewriting all ``N x 256 x 14 x 14`` values through an index tensor of the
  same size; a quarter of a lone box's time. The per-level RoIAlign results come in level order
  and only need putting back in box order: one ``Gather`` by the inverse permutation does it;
- the mask heads' 2x2 stride-2 ``ConvTranspose``: ONNX Runtime has no fast kernel for it (and
  int8 quantisation leaves it in float). Its windows do not overlap, so it is exactly a 1x1
  convolution to ``4 x C`` channels followed by a depth-to-space (pixel shuffle), which runs as
  one matrix product and is quantised with the other convolutions.

Both are applied only while the graphs are traced (:func:`export_rewrites`); the eager model is
left as it was, and the export's parity check compares the graphs with it, so a rewrite that
changed a value would fail the export.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torchvision.ops import poolers


def merge_levels_by_gather(levels: torch.Tensor, unmerged: list[torch.Tensor]) -> torch.Tensor:
    """``_onnx_merge_levels`` without scatters: the per-level results (boxes of level 0, then
    of level 1, ...) concatenated and put back in box order with one gather.

    Args:
        levels (Tensor[N]): the FPN level of each box.
        unmerged (list[Tensor[N_l, C, S, S]]): RoIAlign of each level's boxes, in box order.
    Returns:
        Tensor[N, C, S, S]
    """
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(unmerged))])
    return torch.cat(unmerged)[torch.argsort(order)]


class PixelShuffleDeconv(nn.Module):
    """A ``ConvTranspose2d`` with kernel 2, stride 2, no padding, as conv 1x1 + pixel shuffle.

    ``out[c, 2i + a, 2j + b] = bias[c] + sum_k x[k, i, j] * W[k, c, a, b]`` is channel
    ``4c + 2a + b`` of a 1x1 convolution with weight ``W.permute(1, 2, 3, 0)``, rearranged by
    ``pixel_shuffle(2)``.
    """

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        if not is_pixel_shuffle_deconv(deconv):
            raise ValueError(f"not a 2x2 stride-2 deconvolution without padding: {deconv}")
        w = deconv.weight.detach()  # [C_in, C_out, 2, 2]
        c_in, c_out = w.shape[:2]
        self.conv = nn.Conv2d(c_in, 4 * c_out, 1)
        self.conv.weight.data.copy_(w.permute(1, 2, 3, 0).reshape(4 * c_out, c_in, 1, 1))
        bias = deconv.bias.detach() if deconv.bias is not None else w.new_zeros(c_out)
        self.conv.bias.data.copy_(bias.repeat_interleave(4))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C_in, S, S]`` -> ``[N, C_out, 2S, 2S]``."""
        return self.shuffle(self.conv(x))


def is_pixel_shuffle_deconv(m: nn.Module) -> bool:
    return (isinstance(m, nn.ConvTranspose2d) and tuple(m.kernel_size) == (2, 2)
            and tuple(m.stride) == (2, 2) and tuple(m.padding) == (0, 0)
            and tuple(m.output_padding) == (0, 0) and tuple(m.dilation) == (1, 1)
            and m.groups == 1)


@contextlib.contextmanager
def export_rewrites(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s 2x2 stride-2 deconvolutions are their pixel-shuffle
    equivalents and traced RoI pooling merges levels by gather; both are undone on exit."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_pixel_shuffle_deconv(child):
                swapped.append((parent, name, child))
                setattr(parent, name, PixelShuffleDeconv(child))
    original_merge = poolers._onnx_merge_levels
    poolers._onnx_merge_levels = merge_levels_by_gather
    try:
        yield
    finally:
        poolers._onnx_merge_levels = original_merge
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)

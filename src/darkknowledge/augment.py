"""Random image augmentation of training minibatches: horizontal flips and small translations.

A CNN teacher on Fashion-MNIST gains most of a percentage point from seeing each image
mirrored and shifted by a pixel or two: the labels do not change, the model learns the
invariance instead of memorising positions. :func:`darkknowledge.train.fit` applies an
:class:`ImageAugment` to every training minibatch (never to validation data), drawing its
randomness from the run's own seeded generator, so a run stays reproducible bit for bit and
resumes exactly.

For an image batch :math:`x \\in \\mathbb{R}^{B \\times C \\times H \\times W}` and a maximum
shift :math:`s`, sample :math:`i` gets offsets :math:`\\delta_y, \\delta_x` drawn uniformly
from :math:`\\{-s, \\dots, s\\}` and a coin flip :math:`f_i \\in \\{0, 1\\}` (probability
:math:`\\tfrac12` each, when ``hflip``):

.. math::

    \\tilde x_{i,c,h,w} = \\bar x_{i,c,\\,h + \\delta_y,\\; w' + \\delta_x}, \\qquad
    w' = \\begin{cases} W - 1 - w & f_i = 1 \\\\ w & f_i = 0 \\end{cases}

where :math:`\\bar x` is :math:`x` padded with ``fill`` outside the image (0: the mean
pixel after standardisation). Flipping happens after shifting.

Distillation from cached soft targets does not augment: the cache holds the teacher's
outputs for the unaugmented transfer set, and a shifted image would be matched to the
wrong soft target. ``distill(..., augment=..., teacher_mode="online")`` (or ``"auto"``) does:
the teacher then runs on exactly the augmented batch the student sees ("consistent
teaching", Beyer et al. 2022).

Example:
    >>> import torch
    >>> aug = ImageAugment(hflip=True, shift=2)
    >>> x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    >>> aug(x, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from darkknowledge.errors import InputError, InputTypeError

__all__ = ["AugmentDraw", "ImageAugment", "resolve_augment"]


@dataclass(frozen=True)
class AugmentDraw:
    """The random choices for one minibatch (CPU tensors).

    Attributes:
        dy, dx: ``(B,)`` int64 offsets in ``[-shift, shift]`` (rows, columns).
        flip: ``(B,)`` bool, ``True`` where the sample is mirrored left to right.
    """

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor

    def select(self, positions: torch.Tensor) -> AugmentDraw:
        """The draws of the samples at ``positions`` (e.g. one rank's share of a global minibatch)."""
        positions = positions.cpu()
        return AugmentDraw(dy=self.dy[positions], dx=self.dx[positions], flip=self.flip[positions])


@dataclass(frozen=True)
class ImageAugment:
    """Random horizontal flips and translations of image minibatches.

    Args:
        hflip: mirror each image left to right with probability 1/2.
        shift: largest translation in pixels, each axis drawn uniformly from ``[-shift, shift]``
            (0: none); must be smaller than the image's height and width.
        fill: the value of pixels shifted in from outside the image (0.0: the mean pixel of
            standardised data).

    Works on ``(B, C, H, W)`` and ``(B, H, W)`` batches, on any device, in the batch's dtype.
    """

    hflip: bool = False
    shift: int = 0
    fill: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.hflip, bool):
            raise InputTypeError(f"augment.hflip must be a bool, got {type(self.hflip).__name__} instead.")
        if isinstance(self.shift, bool) or not isinstance(self.shift, int):
            raise InputTypeError(f"augment.shift must be an int (pixels), got {type(self.shift).__name__} instead.")
        if self.shift < 0:
            raise InputError(f"augment.shift must be >= 0 pixels, got {self.shift} instead.")
        if isinstance(self.fill, bool) or not isinstance(self.fill, (int, float)):
            raise InputTypeError(f"augment.fill must be a number, got {type(self.fill).__name__} instead.")
        if self.fill != self.fill or abs(self.fill) == float("inf"):
            raise InputError(f"augment.fill must be finite, got {self.fill!r} instead.")

    @property
    def active(self) -> bool:
        """Whether this augmentation changes anything (a flip or a shift > 0)."""
        return self.hflip or self.shift > 0

    def to_dict(self) -> dict[str, Any]:
        """``{"hflip", "shift", "fill"}`` (JSON-serialisable)."""
        return asdict(self)

    def check_input_shape(self, input_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless ``input_shape`` (one sample's shape) is an image this can augment."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in (2, 3):
            raise InputError(
                f"augment needs image inputs of shape (C, H, W) or (H, W) per sample, got {shape} instead; "
                "flat feature vectors cannot be flipped or shifted (set augment to None)."
            )
        h, w = shape[-2:]
        if self.shift >= min(h, w):
            raise InputError(f"augment.shift must be smaller than the image ({h}x{w}), got {self.shift} instead.")

    def draw(self, batch_size: int, generator: torch.Generator | None = None) -> AugmentDraw:
        """Draw one minibatch's offsets and flips from ``generator`` (always the same number of draws)."""
        s = self.shift
        dy = torch.randint(-s, s + 1, (batch_size,), generator=generator)
        dx = torch.randint(-s, s + 1, (batch_size,), generator=generator)
        flip = torch.rand(batch_size, generator=generator) < 0.5 if self.hflip else torch.zeros(batch_size, dtype=torch.bool)
        return AugmentDraw(dy=dy, dx=dx, flip=flip)

    def apply(self, x: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
        """Apply ``draw`` to ``x`` ``(B, C, H, W)`` or ``(B, H, W)``; returns a new tensor of the same shape."""
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(1)
        if x.dim() != 4:
            raise InputError(f"x must be a (B, C, H, W) or (B, H, W) image batch, got shape {tuple(x.shape)} instead.")
        b, c, h, w = x.shape
        out = x
        s = self.shift
        if s > 0:
            padded = F.pad(x, (s, s, s, s), value=float(self.fill))  # (B, C, H + 2s, W + 2s)
            dev = x.device
            rows = (s + draw.dy.to(dev))[:, None] + torch.arange(h, device=dev)  # (B, H) rows of padded
            cols = (s + draw.dx.to(dev))[:, None] + torch.arange(w, device=dev)  # (B, W) columns of padded
            out = padded[
                torch.arange(b, device=dev)[:, None, None, None],
                torch.arange(c, device=dev)[None, :, None, None],
                rows[:, None, :, None],
                cols[:, None, None, :],
            ]  # (B, C, H, W)
        if self.hflip:
            out = torch.where(draw.flip.to(x.device)[:, None, None, None], out.flip(-1), out)
        return out.squeeze(1) if squeeze else out

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw from ``generator`` and apply: a randomly flipped and shifted copy of the batch ``x``."""
        return self.apply(x, self.draw(len(x), generator))


def resolve_augment(augment: ImageAugment | Mapping[str, Any] | None) -> ImageAugment | None:
    """``None``, an :class:`ImageAugment`, or its dict form (as configs give it) -> an active augment or ``None``."""
    if augment is None or isinstance(augment, ImageAugment):
        return augment if augment is not None and augment.active else None
    if isinstance(augment, Mapping):
        unknown = set(augment) - {"hflip", "shift", "fill"}
        if unknown:
            raise InputError(f"augment has unknown keys {sorted(unknown)}; expected hflip, shift, fill.")
        return resolve_augment(ImageAugment(**augment))
    raise InputTypeError(f"augment must be None, an ImageAugment or a dict, got {type(augment).__name__} instead.")

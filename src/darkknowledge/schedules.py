"""Learning-rate schedules stepped once per minibatch: constant, cosine, one-cycle, with linear warm-up.

With base rate :math:`\\eta`, ``T`` steps in all and ``W`` warm-up steps, the rate used for
step :math:`t = 0, 1, \\dots, T-1` is

.. math::

    \\eta_t = \\eta \\, \\frac{t + 1}{W} \\quad (t < W), \\qquad
    \\eta_t = \\begin{cases}
        \\eta & \\text{constant} \\\\
        \\eta \\, \\tfrac12 \\bigl(1 + \\cos(\\pi \\, \\tfrac{t - W}{T - W})\\bigr) & \\text{cosine (to 0 at } t = T)
    \\end{cases} \\quad (t \\ge W).

``"onecycle"`` is :class:`torch.optim.lr_scheduler.OneCycleLR` with ``max_lr = lr`` (its
warm-up fraction ``pct_start = W / T``, or torch's 0.3 when ``W = 0``; momentum is not cycled,
so the optimizer's momentum is the one asked for).

Reference: Loshchilov & Hutter, *SGDR: Stochastic Gradient Descent with Warm Restarts* (2017);
Smith & Topin, *Super-Convergence* (2019); Goyal et al., *Accurate, Large Minibatch SGD* (2017) for warm-up.
"""

from __future__ import annotations

import math

import torch

from darkknowledge._checks import check_one_of, check_positive_int
from darkknowledge.errors import InputError

__all__ = ["LR_SCHEDULES", "build_scheduler", "lr_factor"]

#: The valid ``lr_schedule`` names.
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "onecycle")


def lr_factor(step: int, *, schedule: str, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base rate at ``step`` for the ``"constant"`` and ``"cosine"`` schedules.

    >>> [round(lr_factor(t, schedule="cosine", total_steps=4, warmup_steps=1), 4) for t in range(4)]
    [1.0, 1.0, 0.75, 0.25]
    """
    check_one_of("schedule", schedule, ("constant", "cosine"))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: str,
    total_steps: int,
    warmup_steps: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step scheduler for ``optimizer`` (call ``scheduler.step()`` after each ``optimizer.step()``).

    Args:
        optimizer: its current ``lr`` per group is the base (peak) rate.
        schedule: one of :data:`LR_SCHEDULES`.
        total_steps: minibatch steps of the whole run (epochs x steps per epoch).
        warmup_steps: steps of linear warm-up, ``0 <= warmup_steps < total_steps``.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> s = build_scheduler(opt, schedule="cosine", total_steps=2)
        >>> lrs = []
        >>> for _ in range(2):
        ...     lrs.append(opt.param_groups[0]["lr"]); opt.step(); s.step()
        >>> [round(x, 4) for x in lrs]
        [0.1, 0.05]
    """
    check_one_of("lr_schedule", schedule, LR_SCHEDULES)
    check_positive_int("total_steps", total_steps)
    check_positive_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps >= total_steps and warmup_steps > 0:
        raise InputError(
            f"warmup_steps must be < total_steps={total_steps}, got {warmup_steps} instead; "
            "use fewer warm-up epochs than epochs."
        )
    if schedule == "onecycle":
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        pct_start = warmup_steps / total_steps if warmup_steps else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=total_steps, pct_start=pct_start, cycle_momentum=False
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, schedule=schedule, total_steps=total_steps, warmup_steps=warmup_steps),
    )

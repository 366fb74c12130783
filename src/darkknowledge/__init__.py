"""darkknowledge: knowledge distillation on an exact, fast core of information theory and losses.

Subpackages and modules (imports flow downward only)::

    cli -> experiment -> distill -> {losses, train, evaluate, soft_targets}
        -> {functional, info, teachers} -> {data, report, config, checkpoint, models, _checks}
"""

__version__ = "0.1.0"

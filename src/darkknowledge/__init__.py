"""darkknowledge: knowledge distillation on an exact, fast core of information theory and losses.

The public API, at the package root (``import darkknowledge as dk``)::

    dk.distill(student, teacher, data, ...)      # train a student on a teacher's soft targets
    dk.fit(model, data, ...)                      # plain training
    dk.evaluate(model, data, teacher=None)        # errors, accuracy, NLL, ECE, agreement, KL
    dk.distillation_loss(s, t, y, ...)            # the loss; dk.DistillationLoss as a module
    dk.as_teacher(obj), dk.cross_fit_logits(...)  # anything that produces class scores -> a teacher
    dk.as_splits(data), dk.load_dataset(name)     # the data people have -> dk.Splits

Each name is imported on first use (PEP 562), so ``import darkknowledge`` stays fast and does not
import torch. ``dk.distill`` and ``dk.evaluate`` share their names with the modules
``darkknowledge.distill`` and ``darkknowledge.evaluate``: those two modules are made callable (calling
the module calls its function of the same name), so ``dk.distill(...)`` works and
``import darkknowledge.distill as m; m.fit`` keeps working, in whatever order they are imported.

Subpackages and modules (imports flow downward only)::

    cli -> experiment -> distill -> {losses, train, evaluate, soft_targets}
        -> {functional, info, teachers} -> {data, report, config, checkpoint, models, _checks}
"""

import importlib
import sys
import types

__version__ = "0.1.0"

#: public name -> (module, attribute)
_API = {
    "distill": ("darkknowledge.distill", "distill"),
    "fit": ("darkknowledge.train", "fit"),
    "evaluate": ("darkknowledge.evaluate", "evaluate"),
    "distillation_loss": ("darkknowledge.losses", "distillation_loss"),
    "DistillationLoss": ("darkknowledge.losses", "DistillationLoss"),
    "load_dataset": ("darkknowledge.data", "load_dataset"),
    "Splits": ("darkknowledge.data", "Splits"),
    "as_splits": ("darkknowledge.data", "as_splits"),
    "as_teacher": ("darkknowledge.teachers", "as_teacher"),
    "cross_fit_logits": ("darkknowledge.teachers", "cross_fit_logits"),
    "DarkKnowledgeError": ("darkknowledge.errors", "DarkKnowledgeError"),
    "InputError": ("darkknowledge.errors", "InputError"),
    "InputTypeError": ("darkknowledge.errors", "InputTypeError"),
    "MissingFileError": ("darkknowledge.errors", "MissingFileError"),
}
#: public functions whose name is also a submodule's: that submodule is made callable
_CALLABLE_MODULES = ("distill", "evaluate")

__all__ = sorted(_API) + ["__version__"]


class _CallableModule(types.ModuleType):
    """A module that calls its function of the same name: ``darkknowledge.distill(...)``."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        return inspect.signature(getattr(self, self.__name__.rpartition(".")[2]))


class _Package(types.ModuleType):
    """This package's module type: when the import system binds ``distill`` / ``evaluate`` submodules
    on it, it makes them callable, so ``dk.distill(...)`` works whichever way it was imported."""

    def __setattr__(self, name, value):
        if name in _CALLABLE_MODULES and isinstance(value, types.ModuleType) and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
for _name in _CALLABLE_MODULES:  # already imported (e.g. by a reload): make them callable too
    _mod = sys.modules.get(f"{__name__}.{_name}")
    if _mod is not None and type(_mod) is types.ModuleType:
        _mod.__class__ = _CallableModule


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _API[name]
    mod = importlib.import_module(module)
    if name in _CALLABLE_MODULES:
        return mod  # the callable module (bound on the package by the import itself)
    value = getattr(mod, attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

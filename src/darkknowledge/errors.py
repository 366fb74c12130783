"""The errors darkknowledge raises for problems the user can fix, apart from its own bugs.

Every check of user input (arguments, configs, data files, run folders, checkpoints) raises one
of these. They subclass the built-in type a Python user expects (``ValueError``, ``TypeError``,
``FileNotFoundError``), so ``except ValueError`` keeps working, and they share the base
:class:`DarkKnowledgeError`, which is what the command line turns into a one-line
``darkknowledge: error: ...`` with exit code 2. Any other exception escaping the command line
is a bug in darkknowledge (or in a library below it) and is shown with its traceback (exit 1),
so that it can be reported rather than being mistaken for bad input.

Example:
    >>> from darkknowledge.errors import DarkKnowledgeError, InputError
    >>> err = InputError("temperature must be a finite number > 0, got -1.0 instead.")
    >>> isinstance(err, ValueError) and isinstance(err, DarkKnowledgeError)
    True
"""

from __future__ import annotations

__all__ = ["DarkKnowledgeError", "InputError", "InputTypeError", "MissingFileError"]


class DarkKnowledgeError(Exception):
    """Base of every error that means "the input, a file or the machine is not as expected"."""


class InputError(DarkKnowledgeError, ValueError):
    """A value is outside what is allowed (a ``ValueError``): the message names it and what was expected."""


class InputTypeError(DarkKnowledgeError, TypeError):
    """A value has the wrong type (a ``TypeError``): the message names it and the type expected."""


class MissingFileError(DarkKnowledgeError, FileNotFoundError):
    """A file or folder the user named does not exist (a ``FileNotFoundError``)."""

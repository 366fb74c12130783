"""Run folders: claimed before anything is written, never shared, never written through a link.

Every folder darkknowledge writes a run into (``fit(out_dir=...)``, ``darkknowledge train --out``,
``darkknowledge run --out``) is *claimed* first by :func:`claim_run_dir`, which

1. refuses an empty path (it would mean the current folder): ``out_dir must name a folder``;
2. accepts a folder that does not exist yet, an empty folder, or a darkknowledge run folder of the
   same kind -- recognised by the marker file ``.darkknowledge-run`` (JSON ``{"kind", "version"}``)
   that this module writes into every folder it claims. Anything else (a folder holding other
   files, a run of another kind) is refused unless ``force=True`` (``--force``);
3. for a training run (``kind="fit"``), refuses to start over a checkpoint silently: an interrupted
   run (``checkpoint/last.safetensors`` without ``resume``) or a finished one needs ``resume`` or
   ``force``; ``resume`` together with ``force`` is an error;
4. refuses a symbolic link, a FIFO, a socket or a device at any path inside the folder that
   darkknowledge writes, replaces or deletes (``checkpoint/``, ``log.jsonl``, ``model.safetensors``,
   ...), with or without ``force`` -- the folder itself may be a link to a folder;
5. takes an exclusive lock (``fcntl.flock`` on ``.darkknowledge-lock``, non-blocking, the holder's
   PID written in it), held until :meth:`RunFolder.release` (or the process ends): a second process
   is refused with the first one's PID. A process may claim a folder it already holds (the
   ``train`` command and the ``fit`` it calls);
6. removes the stale temporary files a killed process left (``.<name>.<random>.tmp``, the names
   :func:`darkknowledge.checkpoint.atomic_write_bytes` uses) in the folder and its ``checkpoint/``
   folder -- only regular files, never through a link, only once the lock is held.

Under ``torchrun`` only rank 0 claims (and writes); every rank learns whether the claim succeeded,
so a refusal stops them all instead of leaving the others waiting.

A soft-target cache folder is shared by design (several runs may read and write it), so it is not
claimed: only the empty-path rule and the link / regular-file rules apply to its entries
(:func:`check_path`, :func:`check_entries`).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with claim_run_dir(d, kind="fit") as run:
    ...     sorted(p.name for p in d.iterdir())
    ['.darkknowledge-lock', '.darkknowledge-run']
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from darkknowledge.checkpoint import atomic_write_json, describe_file_type, peek_training_state
from darkknowledge.distributed import all_reduce_sum, is_distributed, is_main_process
from darkknowledge.errors import InputError, InputTypeError

try:  # POSIX; elsewhere the folder is not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FIT_FILES",
    "EXPERIMENT_FILES",
    "KINDS",
    "LOCK",
    "MARKER",
    "RunFolder",
    "RunFolderBusyError",
    "RunFolderError",
    "check_entries",
    "check_path",
    "claim_run_dir",
    "describe_file_type",
    "read_marker",
    "remove_stale_temp_files",
]

MARKER = ".darkknowledge-run"
LOCK = ".darkknowledge-lock"
KINDS = ("fit", "experiment")
_MARKER_VERSION = 1
# the temporary names of checkpoint.atomic_write_bytes: "." + target name + "." + mkstemp's random part + ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")

#: Paths inside a training run folder that darkknowledge writes, replaces or deletes (a trailing ``/``: a folder).
FIT_FILES = (MARKER, LOCK, "config.json", "log.jsonl", "checkpoint/", "checkpoint/last.safetensors",
             "model.safetensors", "model.json", "summary.json")
#: The same for a ``run`` (experiment) folder; its sub-folders are claimed again by the fits inside them.
EXPERIMENT_FILES = (MARKER, LOCK, "config.json", "results.json", "report.html", "cache/", "teacher/",
                    "student-alone/", "student-distilled/")


class RunFolderError(InputError):
    """A run folder cannot be used as asked (a ``ValueError``): the message names it and what to do."""


class RunFolderBusyError(RunFolderError):
    """Another process holds the run folder's lock; the message names its PID."""


def _is_marker_temp(name: str) -> bool:
    return name.startswith(f"{MARKER}.") and bool(_TEMP_NAME.match(name))


def check_path(path: Any, *, name: str = "out_dir") -> Path:
    """``path`` as a ``Path``; an empty string (the current folder, by accident) is refused.

    >>> check_path("")
    Traceback (most recent call last):
    ...
    darkknowledge.rundir.RunFolderError: out_dir must name a folder, got '' instead (an empty path would write into the current folder); name one, e.g. 'runs/train'.
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__} instead.")
    text = os.fspath(path)
    if not str(text).strip():
        raise RunFolderError(
            f"{name} must name a folder, got {text!r} instead (an empty path would write into the current "
            "folder); name one, e.g. 'runs/train'."
        )
    return Path(text)


def check_entries(folder: Path, names: Iterable[str]) -> None:
    """Refuse a link or a special file (FIFO, socket, device) at any of ``names`` inside ``folder``.

    ``names`` are relative paths, a trailing ``/`` for a folder; each component below ``folder`` is
    checked with ``os.lstat`` (never followed). Missing paths are fine.
    """
    for name in names:
        want_dir = name.endswith("/")
        p = folder
        parts = Path(name).parts
        for i, part in enumerate(parts):
            p = p / part
            try:
                st = os.lstat(p)
            except (FileNotFoundError, NotADirectoryError):
                break
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(p)
                except OSError:
                    target = "?"
                raise RunFolderError(
                    f"{p} is a symbolic link (to {target!r}); darkknowledge never writes, replaces or deletes "
                    "through a link inside a run or cache folder. Remove the link (or put a real "
                    f"{'folder' if want_dir or i < len(parts) - 1 else 'file'} there) and run again."
                )
            is_last = i == len(parts) - 1
            expect_dir = want_dir or not is_last
            ok = stat.S_ISDIR(st.st_mode) if expect_dir else stat.S_ISREG(st.st_mode)
            if not ok:
                raise RunFolderError(
                    f"{p} is {describe_file_type(st.st_mode)}, where darkknowledge writes "
                    f"{'a folder' if expect_dir else 'a regular file'}; remove it (or choose another folder) "
                    "and run again."
                )


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a darkknowledge run folder (``{"kind", "version"}``), or ``None`` if it is not one."""
    path = Path(folder) / MARKER
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > 65536:
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(info, dict) and info.get("kind") in KINDS:
        return info
    return None


def remove_stale_temp_files(folder: Path, subfolders: Iterable[str] = ("checkpoint",)) -> list[str]:
    """Delete the temporary files a killed write left in ``folder`` (and ``subfolders``); return their names.

    Only regular files named like :func:`darkknowledge.checkpoint.atomic_write_bytes`'s temporary
    files (``.<name>.<random>.tmp``); links are neither followed nor removed. Call it only while
    holding the folder's lock, so that no live process is writing them.
    """
    removed = []
    for sub in (folder, *(folder / s for s in subfolders)):
        try:
            st = os.lstat(sub)
            if not stat.S_ISDIR(st.st_mode):
                continue
            names = os.listdir(sub)
        except OSError:
            continue
        for entry in names:
            if not _TEMP_NAME.match(entry):
                continue
            p = sub / entry
            try:
                if stat.S_ISREG(os.lstat(p).st_mode):
                    p.unlink()
                    removed.append(str(p.relative_to(folder)))
            except OSError:
                pass
    return removed


# ----------------------------------------------------------------------------- the lock

# folders this process holds: realpath -> [fd, count]; a process may claim a folder it holds again
_HELD: dict[str, list[int]] = {}


class RunFolder:
    """A claimed run folder: ``path``; :meth:`release` (or leaving a ``with`` block) unlocks it."""

    def __init__(self, path: Path, key: str | None) -> None:
        self.path = path
        self._key = key

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, held={self._key is not None})"

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the lock back (once per claim; the last release of a process unlocks the folder)."""
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        _HELD[key][1] -= 1
        if _HELD[key][1] <= 0:
            fd = _HELD.pop(key)[0]
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def _unusable(folder: Path, exc: OSError) -> RunFolderError:
    return RunFolderError(
        f"the output folder {str(folder)!r} must be a folder that can be created and written, "
        f"got {type(exc).__name__}: {exc.strerror or exc} instead."
    )


def _lock(folder: Path) -> RunFolder:
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        return RunFolder(folder, key)
    path = folder / LOCK
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise _unusable(folder, exc) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunFolderError(f"{path} is not a regular file; remove it and run again.")
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                raise RunFolderBusyError(
                    f"the output folder {str(folder)!r} is in use by another darkknowledge process (PID {holder}); "
                    "wait for it to finish, or choose another folder."
                ) from None
            except OSError:
                pass  # a file system without locks (some network mounts): go on unlocked
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = [fd, 1]
    return RunFolder(folder, key)


# ----------------------------------------------------------------------------- claiming


def _flags(cli: bool) -> tuple[str, str]:
    return ("--resume", "--force") if cli else ("resume=True", "force=True")


def _check_resume_point(folder: Path, *, resume: bool, force: bool, cli: bool) -> None:
    """A training checkpoint is never discarded silently: refuse a fresh start over one."""
    if resume or force:
        return
    ckpt = folder / "checkpoint" / "last.safetensors"
    if not ckpt.exists():
        return
    resume_flag, force_flag = _flags(cli)
    try:
        done, epochs, stopped = peek_training_state(ckpt)
    except ValueError as exc:
        raise RunFolderError(
            f"the output folder {str(folder)!r} holds a checkpoint that cannot be read ({exc}); "
            f"pass {force_flag} to start over, or choose another folder."
        ) from None
    if done >= epochs or stopped:
        raise RunFolderError(
            f"the output folder {str(folder)!r} already holds a finished run (checkpoint at epoch {done} of "
            f"{epochs}); pass {force_flag} to overwrite it, or choose another folder."
        )
    raise RunFolderError(
        f"the output folder {str(folder)!r} holds an interrupted run (checkpoint at epoch {done} of {epochs}); "
        f"pass {resume_flag} to continue it, {force_flag} to start over."
    )


def _claim_here(folder: Path, *, kind: str, force: bool, resume: bool, cli: bool, files: Iterable[str]) -> RunFolder:
    _, force_flag = _flags(cli)
    try:
        st = os.stat(folder)  # followed: the folder itself may be a link to a folder
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _unusable(folder, exc) from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise RunFolderError(
            f"the output folder {str(folder)!r} must be a folder, got {describe_file_type(st.st_mode)} instead."
        )
    if st is not None:
        try:
            # a lock, or the marker's temporary file, alone: a claim under way (or killed half-way)
            entries = sorted(e for e in os.listdir(folder) if e != LOCK and not _is_marker_temp(e))
        except OSError as exc:
            raise _unusable(folder, exc) from None
        marker = read_marker(folder)
        if entries and marker is None and not force:
            shown = ", ".join(repr(e) for e in entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
            raise RunFolderError(
                f"the output folder {str(folder)!r} is not empty and is not a darkknowledge run folder "
                f"(it holds {shown}); choose a new or empty folder, or pass {force_flag} to write into it anyway."
            )
        if marker is not None and marker["kind"] != kind and not force:
            raise RunFolderError(
                f"the output folder {str(folder)!r} holds a darkknowledge {marker['kind']} run, not a {kind} run; "
                f"choose another folder, or pass {force_flag} to write into it anyway."
            )
    check_entries(folder, files)
    if kind == "fit":  # before the lock, so that a refusal changes nothing
        _check_resume_point(folder, resume=resume, force=force, cli=cli)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable(folder, exc) from None
    handle = _lock(folder)
    try:
        marker = read_marker(folder)
        if marker is None or marker.get("kind") != kind:
            from darkknowledge import __version__

            atomic_write_json(folder / MARKER, {"kind": kind, "version": _MARKER_VERSION, "darkknowledge": __version__})
        remove_stale_temp_files(folder, ("checkpoint",))
    except BaseException:
        handle.release()
        raise
    return handle


def claim_run_dir(
    path: Any,
    *,
    kind: str,
    force: bool = False,
    resume: bool = False,
    cli: bool = False,
    files: Iterable[str] | None = None,
    name: str = "out_dir",
) -> RunFolder:
    """Check, create, mark and lock the run folder ``path`` (see the module docstring); return its handle.

    Args:
        path: the folder (created if missing); ``""`` is an error.
        kind: ``"fit"`` (a training run: ``fit``, ``darkknowledge train``) or ``"experiment"`` (``run``).
        force: write into a folder that is not empty and not a run of this kind, or start a
            training run over its checkpoint.
        resume: a training run will continue its checkpoint (only for ``kind="fit"``).
        cli: word the advice for the command line (``--force``) instead of the library (``force=True``).
        files: paths inside the folder to check for links and special files (default: the kind's).
        name: how the path is called in messages.

    Raises:
        RunFolderError: the folder cannot be used as asked (the message says why and what to do);
        RunFolderBusyError: another process holds it.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r} instead.")
    folder = check_path(path, name=name)
    if resume and force:
        resume_flag, force_flag = _flags(cli)
        raise RunFolderError(
            f"{resume_flag} and {force_flag} contradict each other: {resume_flag} continues the run in "
            f"{str(folder)!r}, {force_flag} starts it over; pass one of them."
        )
    if files is None:
        files = FIT_FILES if kind == "fit" else EXPERIMENT_FILES
    handle = RunFolder(folder, None)
    error: BaseException | None = None
    if is_main_process():  # under torchrun only rank 0 writes the folder
        try:
            handle = _claim_here(folder, kind=kind, force=force, resume=resume, cli=cli, files=files)
        except Exception as exc:  # noqa: BLE001 -- re-raised below, after every rank knows
            error = exc
    if is_distributed():
        failed = float(all_reduce_sum([0.0 if error is None else 1.0])[0]) > 0
        if failed and error is None:
            raise RunFolderError(f"rank 0 could not use the run folder {str(folder)!r}; its message says why.")
    if error is not None:
        raise error
    return handle

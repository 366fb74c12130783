"""MNIST and Fashion-MNIST: finding the four IDX files on disk, or downloading and verifying them.

Where the files are looked for, in this order (the first folder holding all four wins; in
each folder ``<folder>/<name>/`` is tried before ``<folder>/``, and a file may be gzipped
``train-images-idx3-ubyte.gz`` or not ``train-images-idx3-ubyte``):

1. ``data_dir``, the argument;
2. ``$DARKKNOWLEDGE_DATA``, a folder;
3. the user cache, ``$XDG_CACHE_HOME/darkknowledge/<name>`` (default ``~/.cache/darkknowledge/<name>``),
   where downloads go;
4. the system folder ``/usr/share/datasets/<name>``, where Debian / Ubuntu's package
   ``dataset-fashion-mnist`` puts Fashion-MNIST (``apt-get install dataset-fashion-mnist``).

If none has them and downloading is allowed (``download=None`` means allowed unless
``$DARKKNOWLEDGE_OFFLINE=1``; ``download=True`` always; ``download=False`` never), the files
are fetched from the official mirror into the cache: Fashion-MNIST from
``http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/``, MNIST from the mirror
torchvision uses, ``https://ossci-datasets.s3.amazonaws.com/mnist/``. The base URL can be
changed with the ``mirror`` argument or ``$DARKKNOWLEDGE_MNIST_MIRROR`` /
``$DARKKNOWLEDGE_FASHION_MNIST_MIRROR``. Each download is streamed to a temporary file in the
cache folder, checked against ``Content-Length`` and against the SHA-256 of the official
``.gz`` archive recorded in :data:`SOURCES`, and only then renamed into place (``os.replace``):
a corrupt or truncated download raises :class:`DataError` and leaves nothing behind.

Checksums: :data:`SOURCES` records, per file, the algorithm and digest of the official
archive as served (SHA-256 for all eight files; they are the same files as the MD5s the
projects publish) and the SHA-256 of the uncompressed IDX bytes. A download must match the
archive digest. A file found on disk must match either one: the archive digest, or the
digest of its contents, so that uncompressed or re-compressed copies are accepted (Debian's
``dataset-fashion-mnist`` archives carry a normalised gzip header, so their ``.gz`` bytes
differ from the official ones while their contents do not). A file that matches neither
raises :class:`DataError` naming it, the expected and the computed digest. Digests are
recorded in ``Dataset.metadata["files"]``. The structure is checked too: ``(N, 28, 28)``
uint8 images and ``(N,)`` uint8 labels in ``0..9``.

Features are float32 ``(N, 1, 28, 28)`` scaled to ``[0, 1]`` by ``/ 255``; labels int64.

References:
    Y. LeCun, C. Cortes, C. J. C. Burges, *The MNIST database of handwritten digits* (1998).
    H. Xiao, K. Rasul, R. Vollgraf, *Fashion-MNIST: a Novel Image Dataset for Benchmarking
    Machine Learning Algorithms*, arXiv:1708.07747 (2017).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darkknowledge.errors import InputError, InputTypeError, MissingFileError

from ._types import Dataset
from ._validate import DataError, DatasetUnavailableError
from .idx import gunzip_bounded, read_idx

__all__ = [
    "IDX_DATASETS",
    "SOURCES",
    "SYSTEM_DATA_DIR",
    "DataError",
    "DatasetUnavailableError",
    "RemoteFile",
    "IdxSource",
    "cache_dir",
    "candidate_dirs",
    "locate",
    "download_file",
    "load_idx_dataset",
]

logger = logging.getLogger(__name__)

#: Where Debian's ``dataset-*`` packages install data sets (``dpkg -L dataset-fashion-mnist``).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")

_ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its name on the mirror and the checksum of its bytes as served.

    ``algorithm`` is a :func:`hashlib.new` name (``"sha256"``, ``"md5"``) and ``checksum`` the
    digest of the archive; ``content_sha256`` is the SHA-256 of the uncompressed IDX bytes.
    """

    filename: str
    algorithm: str
    checksum: str
    content_sha256: str


@dataclass(frozen=True)
class IdxSource:
    """An MNIST-format data set: its mirror, the four files, and the class names."""

    name: str
    title: str
    base_url: str
    mirror_env: str
    files: dict[str, RemoteFile]
    class_names: tuple[str, ...]
    apt_package: str | None = None


#: The two MNIST-format data sets: per file the SHA-256 of the official ``.gz`` archive (the
#: files whose published MD5s are, in order, MNIST ``f68b3c2d``, ``d53e105e``, ``9fb629c4``,
#: ``ec29112d``; Fashion-MNIST ``8d4fb7e6``, ``25c81989``, ``bef4ecab``, ``bb300cfd``) and the
#: SHA-256 of its uncompressed contents (Fashion-MNIST's computed from Debian's
#: ``dataset-fashion-mnist`` files; all eight agree with values published independently).
SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        name="mnist",
        title="MNIST",
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        mirror_env="DARKKNOWLEDGE_MNIST_MIRROR",
        files={
            "train_images": RemoteFile(
                "train-images-idx3-ubyte.gz",
                "sha256",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            "train_labels": RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "sha256",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            "test_images": RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "sha256",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            "test_labels": RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "sha256",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        },
        class_names=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        title="Fashion-MNIST",
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        mirror_env="DARKKNOWLEDGE_FASHION_MNIST_MIRROR",
        files={
            "train_images": RemoteFile(
                "train-images-idx3-ubyte.gz",
                "sha256",
                "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "train_labels": RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "sha256",
                "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            "test_images": RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "sha256",
                "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            "test_labels": RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "sha256",
                "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        apt_package="dataset-fashion-mnist",
    ),
}

#: The names :func:`load_idx_dataset` accepts.
IDX_DATASETS: tuple[str, ...] = tuple(SOURCES)


def cache_dir(name: str) -> Path:
    """The user cache folder for data set ``name``: ``$XDG_CACHE_HOME/darkknowledge/<name>``.

    ``$XDG_CACHE_HOME`` defaults to ``~/.cache``.

    >>> cache_dir("mnist").parts[-2:]
    ('darkknowledge', 'mnist')
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "darkknowledge" / name


def candidate_dirs(name: str, *, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for ``name``'s files, in order (see the module docstring).

    >>> [p.parts[-1] for p in candidate_dirs("fashion-mnist")][-1]
    'fashion-mnist'
    """
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir) / name, Path(data_dir)]
    env = os.environ.get("DARKKNOWLEDGE_DATA")
    if env:
        dirs += [Path(env) / name, Path(env)]
    dirs.append(cache_dir(name))
    dirs.append(SYSTEM_DATA_DIR / name)
    return dirs


def _file_in(folder: Path, filename: str) -> Path | None:
    """``folder/filename`` (``.gz``) or its uncompressed twin, whichever exists."""
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def locate(
    name: str, *, data_dir: str | os.PathLike | None = None
) -> tuple[dict[str, Path] | None, list[Path]]:
    """Find a folder that holds all four files of ``name``.

    Returns:
        ``(paths, searched)``: ``paths`` maps ``train_images``, ``train_labels``,
        ``test_images``, ``test_labels`` to files (``None`` if no folder has all four);
        ``searched`` lists the folders looked in, in order.
    """
    source = _source(name)
    searched = candidate_dirs(name, data_dir=data_dir)
    for folder in searched:
        found = {role: _file_in(folder, f.filename) for role, f in source.files.items()}
        if all(path is not None for path in found.values()):
            return found, searched  # type: ignore[return-value]
    return None, searched


def _source(name: str) -> IdxSource:
    if name not in SOURCES:
        valid = ", ".join(repr(n) for n in SOURCES)
        raise InputError(f"name must be one of {valid}; got {name!r} instead.")
    return SOURCES[name]


def _download_allowed(download: bool | None) -> bool:
    if download is None:
        return os.environ.get("DARKKNOWLEDGE_OFFLINE", "").strip().lower() not in {"1", "true", "yes"}
    if not isinstance(download, bool):
        raise InputTypeError(f"download must be True, False or None, got {download!r} instead.")
    return download


def download_file(
    url: str, dest: str | os.PathLike, *, algorithm: str, checksum: str, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its length and checksum.

    The bytes are streamed to a temporary file in ``dest``'s folder while being hashed with
    ``algorithm`` (a :func:`hashlib.new` name); the file is renamed to ``dest`` only if the
    byte count equals the ``Content-Length`` header (when sent) and the digest equals
    ``checksum``. Otherwise the temporary file is removed and nothing is left behind.

    Raises:
        DataError: truncated download, or checksum mismatch (naming the file, the expected
            and the computed digest).
        DatasetUnavailableError: (a ``DataError`` and an ``OSError``) the server could not be
            reached or answered with an HTTP error.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        hasher = hashlib.new(algorithm)
        received = 0
        length: int | None = None
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    header = response.headers.get("Content-Length")
                    length = int(header) if header is not None else None
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        hasher.update(chunk)
                        received += len(chunk)
            except http.client.IncompleteRead as exc:
                raise DataError(
                    f"Download of {dest.name} from {url} was truncated: expected "
                    f"{length} bytes, got {received + len(exc.partial)}. Nothing was kept; "
                    "try again."
                ) from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                raise DatasetUnavailableError(f"Could not download {dest.name} from {url}: {exc}") from exc
        if length is not None and received != length:
            raise DataError(
                f"Download of {dest.name} from {url} was truncated: expected {length} bytes "
                f"(Content-Length), got {received}. Nothing was kept; try again."
            )
        got = hasher.hexdigest()
        if got != checksum.lower():
            raise DataError(
                f"Checksum mismatch for {dest.name} downloaded from {url}: expected "
                f"{algorithm} {checksum}, got {got}. The file was not kept."
            )
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


def _mirror(source: IdxSource, mirror: str | None) -> str:
    base = mirror or os.environ.get(source.mirror_env) or source.base_url
    return base if base.endswith("/") else base + "/"


def _not_found(source: IdxSource, searched: list[Path], reason: str) -> MissingFileError:
    """Not found and not downloaded (downloads off): one paragraph, advice for every interface."""
    files = ", ".join(f.filename for f in source.files.values())
    places = ", ".join(str(p) for p in searched)
    package = f"install Debian's package {source.apt_package} (apt-get install {source.apt_package}), " if source.apt_package else ""
    return MissingFileError(
        f"{source.title} files not found. Looked in: {places} for {files} (gzipped or not), and did not download "
        f"them ({reason}). To get them: {package}put the four files in a folder and set DARKKNOWLEDGE_DATA to it "
        "or pass it as the data folder (--data-dir on the command line, dataset.data_dir in a config, data_dir= "
        "in Python), or allow the download (unset DARKKNOWLEDGE_OFFLINE; dataset.download: true in a config, "
        "download=True in Python)."
    )


def _unavailable(source: IdxSource, searched: list[Path], why: str) -> DatasetUnavailableError:
    """Offline (or the mirror down): one paragraph that says what was tried and where files go."""
    files = ", ".join(f.filename for f in source.files.values())
    places = ", ".join(str(p) for p in searched)
    package = (
        f", or install Debian's package {source.apt_package} (apt-get install {source.apt_package})"
        if source.apt_package else ""
    )
    return DatasetUnavailableError(
        f"{source.title} is not on this machine and could not be downloaded ({why}). Looked for "
        f"{files} (gzipped or not) in {places}. To use it offline, put the four files in a folder "
        f"and set DARKKNOWLEDGE_DATA to it, or pass that folder as the data folder (--data-dir on "
        f"the command line, dataset.data_dir in a config, data_dir= in Python){package}."
    )


def _fetch(source: IdxSource, *, mirror: str | None, searched: list[Path]) -> dict[str, Path]:
    folder = cache_dir(source.name)
    base = _mirror(source, mirror)
    paths = {}
    for role, remote in source.files.items():
        dest = folder / remote.filename
        if not dest.is_file():
            logger.info("Downloading %s%s to %s", base, remote.filename, dest)
            try:
                download_file(
                    base + remote.filename, dest, algorithm=remote.algorithm, checksum=remote.checksum
                )
            except DatasetUnavailableError as exc:
                raise _unavailable(source, searched, str(exc)) from exc.__cause__
        paths[role] = dest
    return paths


def _read_checked(path: Path, remote: RemoteFile) -> tuple[np.ndarray, dict]:
    """Read one IDX file after checking it is the official one; return it and its digests."""
    raw = path.read_bytes()
    file_digest = hashlib.new(remote.algorithm, raw).hexdigest()
    try:
        content = gunzip_bounded(raw, str(path)) if raw[:2] == b"\x1f\x8b" else raw
    except ValueError as exc:
        raise DataError(str(exc).removeprefix("IDX file ")) from None
    content_sha256 = hashlib.sha256(content).hexdigest()
    if file_digest != remote.checksum and content_sha256 != remote.content_sha256:
        raise DataError(
            f"{path} is not the official {remote.filename}: expected sha256 "
            f"{remote.content_sha256} of its contents (or {remote.algorithm} "
            f"{remote.checksum} of the archive), got {content_sha256} "
            f"({remote.algorithm} {file_digest} of the file)."
        )
    info = {"path": str(path), remote.algorithm: file_digest, "content_sha256": content_sha256}
    try:
        array = read_idx(content)
    except ValueError as exc:
        raise InputError(str(exc).replace("<bytes>", str(path))) from None
    return array, info


def _check_images(path: Path, images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise InputError(
            f"IDX file {path} must hold uint8 images of shape (N, 28, 28), got "
            f"{images.dtype} of shape {images.shape} instead."
        )


def _check_labels(path: Path, labels: np.ndarray, n_images: int, n_classes: int) -> None:
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise InputError(
            f"IDX file {path} must hold uint8 labels of shape (N,), got {labels.dtype} "
            f"of shape {labels.shape} instead."
        )
    if labels.shape[0] != n_images:
        raise InputError(
            f"IDX file {path} has {labels.shape[0]} labels, but its images file has "
            f"{n_images} images: expected as many labels as images."
        )
    if labels.size and int(labels.max()) >= n_classes:
        raise InputError(
            f"IDX file {path} must hold labels in [0, {n_classes - 1}], got "
            f"{int(labels.max())} instead."
        )


def load_idx_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    mirror: str | None = None,
) -> Dataset:
    """Load MNIST or Fashion-MNIST from disk, downloading it to the cache if allowed.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: a folder to look in first (also ``data_dir/<name>``).
        download: ``None`` (allowed unless ``$DARKKNOWLEDGE_OFFLINE=1``), ``True`` or ``False``.
        mirror: base URL of the mirror, overriding the default and the environment variable.

    Returns:
        A :class:`Dataset` with ``X_train`` float32 ``(60000, 1, 28, 28)`` in ``[0, 1]``
        (pixel / 255), ``y_train`` int64 ``(60000,)``, ``X_test`` ``(10000, 1, 28, 28)``,
        ``y_test`` ``(10000,)``, ten class names, and ``metadata`` with ``source`` (the
        folder or URL), ``files`` (path and digests of each file) and ``shape``.

    Raises:
        FileNotFoundError: no folder holds the files and downloading is not allowed; the
            message lists the folders looked in and how to get the data.
        DataError: a download was corrupt or truncated, or a file found does not match
            the recorded checksums.
        ValueError: a file found is not a valid IDX file of the expected layout.
    """
    source = _source(name)
    allowed = _download_allowed(download)
    paths, searched = locate(name, data_dir=data_dir)
    origin: str
    if paths is not None:
        origin = str(paths["train_images"].parent)
    elif allowed:
        paths = _fetch(source, mirror=mirror, searched=searched)
        origin = _mirror(source, mirror)
    else:
        reason = (
            "download=False was passed"
            if download is False
            else "DARKKNOWLEDGE_OFFLINE is set, which turns downloads off"
        )
        raise _not_found(source, searched, reason)

    arrays, files = {}, {}
    for role in _ROLES:
        arrays[role], files[role] = _read_checked(paths[role], source.files[role])
    n_classes = len(source.class_names)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        _check_images(paths[f"{split}_images"], images)
        _check_labels(paths[f"{split}_labels"], labels, images.shape[0], n_classes)

    def features(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]  # (N, 1, 28, 28)

    X_train, X_test = features(arrays["train_images"]), features(arrays["test_images"])
    return Dataset(
        name=name,
        X_train=X_train,
        y_train=arrays["train_labels"].astype(np.int64),
        X_test=X_test,
        y_test=arrays["test_labels"].astype(np.int64),
        class_names=list(source.class_names),
        metadata={
            "source": origin,
            "files": files,
            "shape": {"X_train": list(X_train.shape), "X_test": list(X_test.shape)},
            "scaling": "pixel / 255",
        },
    )

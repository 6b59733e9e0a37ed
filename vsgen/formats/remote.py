"""Object stores, read side: URLs, their file systems, and the hardened reader of
vsgen outputs in them (a Zarr store, sharded safetensors, one ``.safetensors``
object at any fsspec URL: ``s3://``, ``gs://``, ``memory://``...).

The rules of :mod:`vsgen.formats.readers` hold for remote objects too: documents'
sizes are checked before they are read and read through the bounded parsers of the
format modules (:func:`vsgen.formats.zarr.parse_node`,
:func:`vsgen.formats.sharded.parse_index`,
:func:`vsgen.formats.safetensors.parse_safetensors`), every chunk must be exactly
its size, values are read by range in bounded pieces, and errors are one line
naming the URL. Writing is :mod:`vsgen.objectstore`'s.

Credentials come only from fsspec's usual sources (environment variables such as
``AWS_ACCESS_KEY_ID`` and ``AWS_ENDPOINT_URL``, configuration files); a URL with
credentials in it is refused, and no message prints one. ``fsspec`` and the store's
package (``s3fs`` for ``s3://``: ``pip install "vsgen[s3]"``) are imported only
when a URL is used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy

from vsgen._limits import MAX_INDEX_BYTES, MAX_NODE_BYTES, MAX_NODE_DEPTH, MAX_NODES, MAX_TENSORS
from vsgen.formats.atomic import stop_if_cancelled
from vsgen.formats.base import StoredTensor, TensorFile, UnreadableFile, decoded_values
from vsgen.formats.zarr import ZarrArray

__all__ = [
    "RemoteArray",
    "check_url",
    "filesystem",
    "is_remote",
    "is_store",
    "is_url",
    "open_file",
    "read_index",
    "read_store",
]

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


# --- URLs and file systems ----------------------------------------------------------------


def is_url(target: object) -> bool:
    """Whether ``target`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(target, str) and _URL.match(target) is not None


def is_store(target: object) -> bool:
    """Whether ``target`` is a zarr ``Store`` object (the Python API's Zarr targets)."""
    if isinstance(target, (str, bytes, os.PathLike)) or "zarr" not in _loaded_modules():
        return False
    from zarr.abc.store import Store

    return isinstance(target, Store)


def _loaded_modules() -> set[str]:
    import sys

    return {name.split(".")[0] for name in sys.modules}


def is_remote(target: object) -> bool:
    """A URL or a zarr ``Store``: written by this module, not as local files."""
    return is_url(target) or is_store(target)


def check_url(url: str) -> None:
    """Refuse a URL that holds credentials (they would be printed and recorded).

    Raises:
        ValueError: not naming the URL, which holds a secret.
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("a malformed URL was given as a path") from None
    if "@" in parts.netloc:
        raise ValueError(
            f"a {parts.scheme}:// URL with credentials in it is refused (they would be "
            "printed and recorded); give them through the environment or the store's "
            "configuration (e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path in it (no trailing ``/``), with
    fsspec's usual credentials and settings.

    Raises:
        ValueError: credentials in the URL, or no package for its scheme.
    """
    check_url(url)
    try:
        import fsspec.core

        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as error:
        scheme = url.split("://", 1)[0]
        raise ValueError(
            f"{url}: writing to and reading from {scheme}:// needs fsspec and the "
            f"store's package (pip install 'vsgen[s3]' for s3://): {error}"
        ) from None
    except ValueError as error:
        raise ValueError(f"{url}: not a URL fsspec knows: {error}") from None
    return fs, path.rstrip("/")


def join(*parts: str) -> str:
    """``a/b/c`` from path parts of an object store (no empty parts, no doubled ``/``)."""
    return _join(*parts)


def _join(*parts: str) -> str:
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


def url_of(fs: Any, path: str) -> str:
    """The URL of ``path`` in the file system ``fs``."""
    return _url(fs, path)


def _url(fs: Any, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"{protocol}://{path}"


def bucket_of(fs: Any, path: str) -> str | None:
    """The bucket of ``path`` on stores that have buckets (S3, GCS), else None."""
    split = getattr(fs, "split_path", None)
    if split is None:
        return None
    return str(split(path)[0]) or None


# --- reading ---------------------------------------------------------------------------------


def read_store(fs: Any, path: str, display: str) -> Any:
    """The Zarr store at ``path`` as :func:`vsgen.formats.zarr.read_store` reads a local
    one: every node (bounded in count and depth), each ``zarr.json`` bounded before it
    is read."""
    from vsgen.formats.zarr import StoreError, ZarrStore, _recorded_order

    root = _node(fs, path, (), display)
    if root["node_type"] == "array":
        name = _root_name(path, root)
        array = RemoteArray(fs, path, name, (), root, display)
        return ZarrStore(path, (array,), (), root["attributes"])
    arrays: list[Any] = []
    groups: list[tuple[str, ...]] = [()]
    pending: list[tuple[str, ...]] = [()]
    nodes = 1
    while pending:
        parts = pending.pop()
        children = []
        for entry in fs.ls(_join(path, *parts), detail=True):
            stop_if_cancelled()
            if entry.get("type") != "directory":
                continue
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            here = (*parts, name)
            if fs.isfile(_join(path, *here, "zarr.json")):
                children.append(here)
        for here in sorted(children):
            nodes += 1
            if nodes > MAX_NODES or len(here) > MAX_NODE_DEPTH:
                raise StoreError(display, here, "too many or too deeply nested nodes")
            node = _node(fs, path, here, display)
            if node["node_type"] == "group":
                groups.append(here)
                pending.append(here)
            else:
                arrays.append(RemoteArray(fs, path, "/".join(here), here, node, display))
                if len(arrays) > MAX_TENSORS:
                    raise StoreError(display, (), f"holds over {MAX_TENSORS:,} arrays")
    order = _recorded_order(root)
    position = {name: i for i, name in enumerate(order)}
    arrays.sort(key=lambda a: (position.get(a.name, len(position)), a.name))
    return ZarrStore(path, tuple(arrays), tuple(groups), root["attributes"])


def _root_name(path: str, node: dict[str, Any]) -> str:
    from vsgen.formats.zarr import _recorded_order

    recorded = _recorded_order(node)
    if len(recorded) == 1 and recorded[0]:
        return recorded[0]
    stem = path.rstrip("/").rsplit("/", 1)[-1]
    return stem.removesuffix(".zarr") or "weight"


def _node(fs: Any, path: str, parts: tuple[str, ...], display: str) -> dict[str, Any]:
    from vsgen.formats.zarr import StoreError, parse_node

    entry = (*parts, "zarr.json")
    key = _join(path, *entry)
    try:
        size = int(fs.size(key))
    except FileNotFoundError:
        raise StoreError(display, entry, "missing (every Zarr node has one)") from None
    if size > MAX_NODE_BYTES:
        raise StoreError(display, entry, f"is larger than {MAX_NODE_BYTES >> 20} MiB; refusing it")
    return parse_node(_head(fs, key, size), display, entry)


class RemoteArray(ZarrArray):
    """A Zarr array of an object store: chunks read by range, each exactly its size."""

    def __init__(
        self,
        fs: Any,
        store: str,
        name: str,
        parts: tuple[str, ...],
        node: dict[str, Any],
        display: str,
    ) -> None:
        super().__init__(store, name, parts, node, display)
        self.fs = fs
        self.directory = _join(store, *parts)

    def _open_chunk(self, index: Sequence[int]) -> Any:
        from vsgen.formats.zarr import chunk_key

        key = _join(self.directory, *chunk_key(index))
        try:
            size = int(self.fs.size(key))
        except FileNotFoundError:
            raise self._refuse(index, "is missing (vsgen writes every chunk)") from None
        if size != self.chunk_bytes:
            raise self._refuse(index, f"has {size:,} bytes; the chunk holds {self.chunk_bytes:,}")
        return key

    def _pread(self, handle: Any, size: int, offset: int) -> bytes:
        return bytes(self.fs.cat_file(handle, start=offset, end=offset + size))

    def _close(self, handle: Any) -> None:
        return None


class RemoteValues:
    """Reads the values of a tensor stored at an offset of an object, by range."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def values(
        self, tensor: StoredTensor, chunk_size: int, any_order: bool
    ) -> Iterator[numpy.ndarray]:
        key = tensor.source

        def read(offset: int, size: int) -> bytes:
            return bytes(self.fs.cat_file(key, start=offset, end=offset + size))

        return decoded_values(tensor, chunk_size, read)


def _head(fs: Any, key: str, size: int) -> bytes:
    """The first ``size`` bytes of the object ``key`` (its size, checked by the caller
    against its cap): a range within the object, as every store serves it."""
    return b"" if size <= 0 else bytes(fs.cat_file(key, start=0, end=size))


def read_index(fs: Any, path: str, display: str) -> Any:
    from vsgen.formats.sharded import INDEX_NAME, parse_index

    key = _join(path, INDEX_NAME)
    where = f"{display.rstrip('/')}/{INDEX_NAME}"
    try:
        size = int(fs.size(key))
    except FileNotFoundError:
        raise UnreadableFile(f"{where}: missing") from None
    if size > MAX_INDEX_BYTES:
        raise UnreadableFile(f"{where} is larger than {MAX_INDEX_BYTES >> 20} MiB; refusing it")
    return parse_index(_head(fs, key, size), where)


def _safetensors(fs: Any, key: str, shown: str) -> tuple[tuple[StoredTensor, ...], dict[str, str]]:
    from vsgen.formats.safetensors import parse_safetensors

    try:
        size = int(fs.size(key))
    except FileNotFoundError:
        raise UnreadableFile(f"{shown}: missing") from None
    with fs.open(key, "rb", block_size=1 << 20) as handle:
        tensors, metadata = parse_safetensors(shown, handle, size)
    reader = RemoteValues(fs)
    return tuple(t._replace(reader=reader, source=key) for t in tensors), metadata


def open_file(url: str) -> TensorFile:
    """The tensors of the vsgen output at ``url``: a Zarr store, sharded safetensors
    (a directory with ``model.safetensors.index.json``) or one ``.safetensors`` object.

    Raises:
        UnreadableFile: not one of those, or refused as the readers refuse local files.
        OSError: the store cannot be read.
    """
    from vsgen.formats import registry
    from vsgen.formats.sharded import INDEX_NAME, assemble

    fs, path = filesystem(url)
    if fs.isfile(_join(path, "zarr.json")):
        zarr_format = registry.get("zarr")
        found = read_store(fs, path, url)
        tensors = tuple(
            StoredTensor(
                url,
                "zarr",
                array.name,
                array.shape,
                array.dtype.name,
                array.dtype.itemsize,
                reader=zarr_format,
                source=array,
            )
            for array in found.arrays
        )
        from vsgen.formats.zarr import _metadata

        return TensorFile(url, "zarr", tensors, _metadata(found))
    if fs.isfile(_join(path, INDEX_NAME)):
        index = read_index(fs, path, url)

        def read_shard(name: str) -> tuple[Any, dict[str, str]]:
            return _safetensors(fs, _join(path, name), f"{url.rstrip('/')}/{name}")

        return assemble(url, index, lambda name: bool(fs.isfile(_join(path, name))), read_shard)
    if fs.isfile(path):
        tensors, metadata = _safetensors(fs, path, url)
        return TensorFile(url, "safetensors", tensors, metadata)
    if fs.exists(path):
        raise UnreadableFile(
            f"{url}: not a Zarr store, sharded safetensors or a .safetensors object"
        )
    raise UnreadableFile(f"file not found: {url}")

"""Reader, writer and validator for IDX files (the MNIST / Fashion-MNIST format).

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the
data in row-major (C) order, big-endian::

    magic = 0x00 0x00 <type code> <ndim>
    type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    size(data) = prod(shape) * itemsize

MNIST's image files have magic 2051 (0x00000803: uint8, 3 dims [N, 28, 28]) and its
label files 2049 (0x00000801: uint8, 1 dim [N]). Files may be gzipped (``.gz``).

Everything here raises :class:`IDXError` (a ``ValueError``) naming the file and what
is wrong with it, so that a truncated download or a corrupt archive is reported as such
instead of as an assertion deep inside torchvision's reader.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, NamedTuple, Sequence

import numpy as np

from qidbm.atomic import atomic_write

__all__ = [
    "IDX_TYPES",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "IDXError",
    "IDXHeader",
    "decompress_idx",
    "parse_idx_header",
    "read_idx",
    "validate_idx",
    "write_idx",
]

#: IDX type code -> numpy dtype (big-endian as stored on disk).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_MAGIC = 0x00000803  # 2051: uint8, 3 dimensions
LABELS_MAGIC = 0x00000801  # 2049: uint8, 1 dimension

_CHUNK = 1 << 20
# Errors the gzip module raises on a damaged stream: a bad header or CRC (BadGzipFile,
# an OSError), a corrupt deflate stream (zlib.error) or a truncated one (EOFError).
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


class IDXError(ValueError):
    """An IDX file is missing, truncated, corrupt or not the expected kind of file."""


class IDXHeader(NamedTuple):
    """Parsed IDX header: ``magic`` (the 4-byte number), numpy ``dtype``, ``shape``,
    ``header_size`` (bytes before the data) and ``data_size`` (bytes of data expected)."""

    magic: int
    dtype: np.dtype
    shape: tuple[int, ...]
    header_size: int
    data_size: int


def _is_gz(path: Path) -> bool:
    return path.suffix == ".gz"


def _fix_hint(path: Path) -> str:
    return (
        f"Delete {path} and obtain it again (download=True fetches the original files), "
        "or point `root` / QIDBM_DATA_DIR at a folder with intact raw files."
    )


def parse_idx_header(head: bytes, path: str | os.PathLike = "<bytes>") -> IDXHeader:
    """Parse the magic number and dimensions at the start of an IDX file.

    ``head`` must hold at least the first ``4 + 4 * ndim`` bytes. Raises :class:`IDXError`
    when the magic number is not ``00 00 <known type> <ndim >= 1>``.
    """
    path = Path(path)
    if len(head) < 4:
        raise IDXError(f"{path}: file too short for an IDX header ({len(head)} bytes). {_fix_hint(path)}")
    zero0, zero1, code, ndim = head[0], head[1], head[2], head[3]
    magic = int.from_bytes(head[:4], "big")
    if zero0 != 0 or zero1 != 0 or code not in IDX_TYPES or ndim < 1:
        gz_note = " (a .gz must be decompressed first)" if head[:2] == b"\x1f\x8b" else ""
        raise IDXError(
            f"{path}: bad IDX magic number 0x{magic:08X} (expected 00 00 <type code in "
            f"{sorted(IDX_TYPES)}> <ndim >= 1>, e.g. 0x{IMAGES_MAGIC:08X} for MNIST images, "
            f"0x{LABELS_MAGIC:08X} for labels). Is this really an IDX file"
            f"{gz_note}? {_fix_hint(path)}"
        )
    header_size = 4 + 4 * ndim
    if len(head) < header_size:
        raise IDXError(
            f"{path}: truncated IDX header ({len(head)} bytes, need {header_size} for {ndim} dimensions). "
            f"{_fix_hint(path)}"
        )
    shape = struct.unpack(f">{ndim}I", head[4:header_size])
    dtype = IDX_TYPES[code]
    data_size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return IDXHeader(magic, dtype, tuple(int(s) for s in shape), header_size, data_size)


def _check_expectations(
    header: IDXHeader,
    path: Path,
    expected_magic: int | None,
    expected_shape: Sequence[int | None] | None,
) -> None:
    if expected_magic is not None and header.magic != expected_magic:
        swapped = {IMAGES_MAGIC: LABELS_MAGIC, LABELS_MAGIC: IMAGES_MAGIC}.get(expected_magic) == header.magic
        what = (
            f"the file holds {header.dtype.name} data of shape {list(header.shape)}. Are image and label files swapped?"
            if swapped
            else "the file is corrupt or not the expected IDX file."
        )
        raise IDXError(
            f"{path}: bad IDX magic number 0x{header.magic:08X} ({header.magic}), expected "
            f"0x{expected_magic:08X} ({expected_magic}); {what} {_fix_hint(path)}"
        )
    if expected_shape is not None:
        ok = len(expected_shape) == len(header.shape) and all(
            e is None or e == s for e, s in zip(expected_shape, header.shape)
        )
        if not ok:
            want = ["*" if e is None else e for e in expected_shape]
            raise IDXError(f"{path}: IDX shape {list(header.shape)}, expected {want}. {_fix_hint(path)}")


def _stream_gz(path: Path, sink: BinaryIO | None) -> tuple[IDXHeader, int]:
    """Decompress ``path`` fully (checking the gzip CRC), parse the header, copy the
    decompressed bytes to ``sink`` if given; returns the header and the total size."""
    total = 0
    head = b""
    try:
        with gzip.open(path, "rb") as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                if len(head) < 64:
                    head += chunk[: 64 - len(head)]
                total += len(chunk)
                if sink is not None:
                    sink.write(chunk)
    except EOFError as e:
        raise IDXError(
            f"{path}: truncated gzip file (the compressed stream ends early: {e}). {_fix_hint(path)}"
        ) from e
    except _GZIP_ERRORS as e:
        raise IDXError(f"{path}: corrupt gzip file ({type(e).__name__}: {e}). {_fix_hint(path)}") from e
    header = parse_idx_header(head[: min(len(head), 64)], path)
    return header, total


def _check_size(header: IDXHeader, total: int, path: Path) -> None:
    expected = header.header_size + header.data_size
    if total != expected:
        what = "truncated" if total < expected else "has trailing bytes"
        raise IDXError(
            f"{path}: IDX size mismatch, file {what}: header says shape {list(header.shape)} of "
            f"{header.dtype.name} = {expected} bytes in all, but the "
            f"{'decompressed ' if _is_gz(path) else ''}file has {total} bytes. {_fix_hint(path)}"
        )


def validate_idx(
    path: str | os.PathLike,
    *,
    expected_magic: int | None = None,
    expected_shape: Sequence[int | None] | None = None,
) -> IDXHeader:
    """Check that ``path`` is a complete, well-formed IDX file; return its header.

    For ``.gz`` files the whole stream is decompressed (in memory-bounded chunks, nothing
    written) so that truncation and CRC errors are caught; for plain files only the header
    and the file size are read. Checks: the file exists, the gzip stream is intact, the
    magic number is valid (and equals ``expected_magic`` if given), the shape matches
    ``expected_shape`` (``None`` entries match anything), and the data size equals
    ``prod(shape) * itemsize``. Raises :class:`IDXError` naming the file otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise IDXError(f"{path}: IDX file not found.")
    if _is_gz(path):
        header, total = _stream_gz(path, None)
    else:
        with open(path, "rb") as f:
            head = f.read(64)
        header = parse_idx_header(head, path)
        total = path.stat().st_size
    _check_expectations(header, path, expected_magic, expected_shape)
    _check_size(header, total, path)
    return header


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (possibly gzipped) IDX file into a native-endian numpy array of its shape.

    The file is validated as in :func:`validate_idx`; raises :class:`IDXError` if it is bad.
    """
    path = Path(path)
    if not path.is_file():
        raise IDXError(f"{path}: IDX file not found.")
    if _is_gz(path):
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        except EOFError as e:
            raise IDXError(f"{path}: truncated gzip file ({e}). {_fix_hint(path)}") from e
        except _GZIP_ERRORS as e:
            raise IDXError(f"{path}: corrupt gzip file ({type(e).__name__}: {e}). {_fix_hint(path)}") from e
    else:
        raw = path.read_bytes()
    header = parse_idx_header(raw[:64], path)
    _check_size(header, len(raw), path)
    data = np.frombuffer(raw, dtype=header.dtype, offset=header.header_size).reshape(header.shape)
    return data.astype(header.dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``compress`` or, by default, when
    ``path`` ends in ``.gz``). The dtype must be one of :data:`IDX_TYPES`' (uint8 for
    MNIST images, magic 2051 for 3 dims, 2049 for 1 dim). Returns the path."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"write_idx: dtype {array.dtype} has no IDX type code; use one of {list(codes)}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx: need 1 to 255 dimensions, got {array.ndim}")
    code = codes[native]
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = head + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    if compress is None:
        compress = _is_gz(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        # mtime=0 so that the same array always gives the same bytes (like gzip -n).
        with open(path, "wb") as raw_f, gzip.GzipFile(fileobj=raw_f, mode="wb", mtime=0) as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def decompress_idx(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    expected_magic: int | None = None,
    expected_shape: Sequence[int | None] | None = None,
) -> IDXHeader:
    """Decompress the gzipped IDX file ``src`` to ``dst``, validating it on the way.

    The output is written to a temporary file in ``dst``'s folder and moved into place
    only once the gzip CRC, the magic number, the expected shape and the size have all
    been checked, so an interrupted or concurrent run (several DDP ranks) never leaves a
    half-written ``dst``. ``src`` is only read. Raises :class:`IDXError` naming ``src``.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise IDXError(f"{src}: IDX file not found.")
    found = {}

    def write(sink) -> None:
        header, total = _stream_gz(src, sink)
        _check_expectations(header, src, expected_magic, expected_shape)
        _check_size(header, total, src)
        found["header"] = header

    # mode 0644: the cache may be shared by users / ranks
    atomic_write(dst, write, mode=0o644, fsync=False)
    return found["header"]

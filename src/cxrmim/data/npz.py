"""Arrays of an uncompressed .npz opened as memory maps, so a 20 GB member is never read into memory whole."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # a zip member's local file header (30 bytes)


def npz_member(path: str | Path, name: str) -> np.ndarray:
    """Array `name` of the .npz at `path`: a read-only memory map when stored uncompressed, else loaded."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            # Older validity files were compressed; they can only be read whole.
            with np.load(path) as data:
                return data[name]
        offset = info.header_offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        fields = LOCAL_HEADER.unpack(handle.read(LOCAL_HEADER.size))
        if fields[0] != b"PK\x03\x04":
            raise ValueError(f"{path}: member {name} has no zip header; the file is damaged, re-run its rule")
        handle.seek(offset + LOCAL_HEADER.size + fields[-2] + fields[-1])
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        start = handle.tell()
    if dtype.hasobject or not shape:
        with np.load(path) as data:
            return data[name]
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=start, order="F" if fortran else "C")

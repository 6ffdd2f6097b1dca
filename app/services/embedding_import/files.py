"""Reading a file of vectors keyed by file name or sha256: the layouts an import accepts.

- `.npz`: arrays `keys` ([N] strings) and `vectors` ([N, D] numbers), as written by
  `np.savez(path, keys=names, vectors=vectors_N_D)`;
- `.npy`: one structured array with fields `key` (a string) and `vector` ([D] numbers):
  `rows = np.empty(N, dtype=[("key", "U200"), ("vector", "f4", (D,))])`, its fields set,
  then `np.save(path, rows)`;
- `.parquet`: a string column `key` and either a column `vector` of number lists or, without
  one, one numeric column per dimension (every column but `key`, in file order).

Nothing is ever unpickled (numpy's `allow_pickle=False`): keys saved as Python objects are
refused with a sentence saying how to save them. Memory is bounded before the arrays are
read: the file within `max_bytes`, and what it unpacks to (an .npz's members, a parquet
file's columns, as their headers declare them) within UNPACKED_OF_LIMIT times that.
"""

from __future__ import annotations

import collections
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

FORMATS = (".npz", ".npy", ".parquet")
FORMATS_TEXT = (
    ".npz (arrays keys and vectors), .npy (a structured array with fields key and vector) "
    "or .parquet (a key column and a vector column, or one numeric column per dimension)"
)
# How each format's files begin: anything else is refused before a parser sees it.
MAGIC = {".npz": b"PK", ".npy": b"\x93NUMPY", ".parquet": b"PAR1"}
# Compressed .npz members and parquet columns may unpack past the upload limit; vectors
# barely compress, so twice the limit stops only absurd declared sizes.
UNPACKED_OF_LIMIT = 2


class UnreadableFile(Exception):
    """The file is not one of the accepted layouts; the message says what is wrong."""


@dataclass(frozen=True)
class KeyedVectors:
    """The rows of a file: one key and one vector each.

    Attributes:
        keys: one per row, as written in the file ("" for a missing key).
        vectors_N_D: float32 rows; rows in `bad_rows` are zeros.
        bad_rows: row → why it has no usable vector (a null, or a length other than D).
    """

    keys: list[str]
    vectors_N_D: np.ndarray
    bad_rows: dict[int, str] = field(default_factory=dict)

    @property
    def dimension(self) -> int | None:
        """D, None for a file without a single usable row."""
        return None if len(self.keys) == len(self.bad_rows) else int(self.vectors_N_D.shape[1])


def read_vectors(source: IO[bytes], *, name: str, max_bytes: int) -> KeyedVectors:
    """The keys and vectors of `source`, in the layout its name's suffix says.

    Raises:
        UnreadableFile: another format, a file over the limits, or not the layout.
    """
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in FORMATS:
        raise UnreadableFile(f"{name!r} is not a file of vectors: send {FORMATS_TEXT}.")
    size = source.seek(0, 2)
    source.seek(0)
    if size > max_bytes:
        raise UnreadableFile(
            f"{name!r} is {size} bytes, over the limit of {max_bytes}: import it in parts."
        )
    if source.read(len(MAGIC[suffix])) != MAGIC[suffix]:
        raise UnreadableFile(f"{name!r} is not a {suffix} file (it does not start like one).")
    source.seek(0)
    limit = UNPACKED_OF_LIMIT * max_bytes
    try:
        if suffix == ".npz":
            return _read_npz(source, limit=limit)
        if suffix == ".npy":
            return _read_npy(source)
        return _read_parquet(source, limit=limit)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise UnreadableFile(f"{name!r} is not a readable {suffix} file ({exc}).") from None


def _read_npz(source: IO[bytes], *, limit: int) -> KeyedVectors:
    with np.load(source, allow_pickle=False) as arrays:
        missing = {"keys", "vectors"} - set(arrays.files)
        if missing:
            raise UnreadableFile(
                f"an .npz needs arrays 'keys' and 'vectors'; it has {sorted(arrays.files)}"
            )
        unpacked = sum(info.file_size for info in arrays.zip.infolist())
        if unpacked > limit:
            raise UnreadableFile(f"its arrays unpack to {unpacked} bytes, over {limit}")
        keys = _array(arrays, "keys")
        vectors = _array(arrays, "vectors")
    if keys.ndim != 1 or vectors.ndim != 2 or len(keys) != len(vectors):
        raise UnreadableFile(
            f"keys must be [N] and vectors [N, D]; they are {list(keys.shape)} and "
            f"{list(vectors.shape)}"
        )
    return KeyedVectors(_strings(keys, "keys"), _floats(vectors, "vectors"))


def _array(arrays: Any, name: str) -> np.ndarray:
    try:
        array: np.ndarray = arrays[name]
    except ValueError:
        # numpy refuses object arrays without pickle, which is never allowed here.
        raise UnreadableFile(
            f"{name} holds Python objects, which are never unpickled: save a string or "
            "number array (np.array(names, dtype=str))"
        ) from None
    return array


def _read_npy(source: IO[bytes]) -> KeyedVectors:
    try:
        array = np.load(source, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise UnreadableFile("it holds Python objects, which are never unpickled") from None
    names = array.dtype.names or ()
    if "key" not in names or "vector" not in names or array.ndim != 1:
        raise UnreadableFile(
            "an .npy needs a structured array [N] with fields 'key' and 'vector' (a plain "
            "array has no keys: send an .npz with keys and vectors instead)"
        )
    vectors = array["vector"]
    if vectors.ndim != 2:
        raise UnreadableFile("the field 'vector' must be a sub-array of shape (D,)")
    return KeyedVectors(_strings(array["key"], "key"), _floats(vectors, "vector"))


def _strings(keys: np.ndarray, what: str) -> list[str]:
    if keys.size == 0:  # np.array([]) is float64: no keys is no wrong type of key
        return []
    if keys.dtype.kind == "U":
        return [str(key) for key in keys.tolist()]
    if keys.dtype.kind == "S":
        try:
            return [bytes(key).decode() for key in keys.tolist()]
        except UnicodeDecodeError:
            raise UnreadableFile(f"{what} are bytes that are not UTF-8 text") from None
    raise UnreadableFile(f"{what} must be strings (file names or sha256), not {keys.dtype}")


def _floats(vectors: np.ndarray, what: str) -> np.ndarray:
    if vectors.dtype.kind not in "fiu":
        raise UnreadableFile(f"{what} must be numbers, not {vectors.dtype}")
    # Values beyond float32's range become inf here, and are refused as not finite.
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _read_parquet(source: IO[bytes], *, limit: int) -> KeyedVectors:
    # pyarrow takes over half a second to import: only a parquet import pays for it.
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source)
    metadata = parquet.metadata
    unpacked = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if unpacked > limit:
        raise UnreadableFile(f"its columns unpack to {unpacked} bytes, over {limit}")
    table = parquet.read()
    if "key" not in table.column_names:
        raise UnreadableFile(f"a .parquet needs a column 'key'; it has {table.column_names}")
    keys = _parquet_keys(table.column("key"))
    if "vector" in table.column_names:
        vectors, bad_rows = _list_column(table.column("vector").combine_chunks())
        return KeyedVectors(keys, vectors, bad_rows)
    return KeyedVectors(keys, _numeric_columns(table))


def _parquet_keys(column: Any) -> list[str]:
    import pyarrow as pa

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise UnreadableFile(f"the column 'key' must hold strings, not {column.type}")
    return [key or "" for key in column.to_pylist()]


def _list_column(column: Any) -> tuple[np.ndarray, dict[int, str]]:
    """A list column as [N, D]: D is the commonest length; other rows are bad rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    is_list = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    if not (is_list or pa.types.is_fixed_size_list(column.type)):
        raise UnreadableFile(f"the column 'vector' must hold lists of numbers, not {column.type}")
    value_type = column.type.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise UnreadableFile(f"the column 'vector' must hold numbers, not {value_type}")
    lengths_N = pc.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
    values = column.flatten().to_numpy(zero_copy_only=False)  # nulls inside: NaN
    usable = lengths_N[lengths_N >= 0]
    dim = collections.Counter(usable.tolist()).most_common(1)[0][0] if len(usable) else 0
    # Where each row's values start in the flattened column (null rows hold none).
    starts_N = np.concatenate([[0], np.cumsum(np.maximum(lengths_N, 0))[:-1]]).astype(np.int64)
    good_N = lengths_N == dim
    vectors = np.zeros((len(lengths_N), dim), dtype=np.float32)
    rows = np.flatnonzero(good_N)
    with np.errstate(over="ignore"):
        vectors[rows] = values[starts_N[rows, None] + np.arange(dim)]
    bad_rows = {
        int(row): "no vector (null)"
        if lengths_N[row] < 0
        else f"{lengths_N[row]} values where the file's other vectors have {dim}"
        for row in np.flatnonzero(~good_N)
    }
    return vectors, bad_rows


def _numeric_columns(table: Any) -> np.ndarray:
    import pyarrow as pa

    columns = [name for name in table.column_names if name != "key"]
    if not columns:
        raise UnreadableFile("a .parquet needs a column 'vector' or numeric columns beside 'key'")
    for name in columns:
        kind = table.column(name).type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise UnreadableFile(
                f"without a 'vector' column every other column is a dimension, and {name!r} "
                f"holds {kind}, not numbers"
            )
    stacked = np.column_stack(
        [table.column(name).to_numpy() for name in columns]  # nulls: NaN, refused later
    )
    return _floats(stacked, "columns")

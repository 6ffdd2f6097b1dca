"""The embedding store: content-addressed vectors per space, shared across processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from core.embeddings import EmbeddingSpaceMismatch, EmbeddingStore


def _keys(n: int, start: int = 0) -> list[str]:
    return [f"{i:064x}" for i in range(start, start + n)]


def test_vectors_come_back_in_request_order_with_the_missing_listed(tmp_path: Path) -> None:
    space = EmbeddingStore(tmp_path).space("backbone-a/224")
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    space.put(_keys(4), vectors)

    wanted = [_keys(1, 3)[0], _keys(1, 9)[0], _keys(1, 0)[0]]
    found = space.get(wanted)

    assert found.found_positions.tolist() == [0, 2]
    assert found.vectors_N_D.tolist() == [vectors[3].tolist(), vectors[0].tolist()]
    assert found.missing == [_keys(1, 9)[0]]
    assert space.missing(wanted + wanted) == [_keys(1, 9)[0]]
    assert space.dim == 3 and len(space) == 4


def test_a_later_shard_overrides_an_earlier_one_and_a_new_process_sees_it(tmp_path: Path) -> None:
    EmbeddingStore(tmp_path).space("s").put(_keys(2), np.zeros((2, 2), np.float32))
    EmbeddingStore(tmp_path).space("s").put(_keys(1), np.ones((1, 2), np.float32))

    fresh = EmbeddingStore(tmp_path).space("s")

    assert fresh.get(_keys(2)).vectors_N_D.tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_spaces_never_mix(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    store.space("lite0/224").put(_keys(1), np.ones((1, 4), np.float32))

    assert store.space("lite0/112").get(_keys(1)).missing == _keys(1)


def test_a_wrong_dimension_or_a_nan_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    space = EmbeddingStore(tmp_path).space("s")
    space.put(_keys(1), np.ones((1, 4), np.float32))

    with pytest.raises(EmbeddingSpaceMismatch, match="dimension 5 do not fit this space's 4"):
        space.put(_keys(1, 1), np.ones((1, 5), np.float32))
    with pytest.raises(ValueError, match="finite"):
        space.put(_keys(1, 2), np.array([[np.nan, 0, 0, 0]], np.float32))

    assert len(EmbeddingStore(tmp_path).space("s")) == 1


def test_clear_empties_the_space_for_every_reader_and_frees_the_dimension(
    tmp_path: Path,
) -> None:
    writer = EmbeddingStore(tmp_path).space("imported/project-1")
    writer.put(_keys(3), np.ones((3, 4), np.float32))
    # Another process's view (its own store): indexed before the clear.
    reader = EmbeddingStore(tmp_path).space("imported/project-1")
    assert len(reader) == 3 and reader.dim == 4

    assert writer.clear() == 3

    assert len(writer) == 0 and writer.dim is None
    assert len(reader) == 0 and reader.dim is None
    assert reader.get(_keys(3)).missing == _keys(3)
    assert not writer.directory.exists()
    assert [path.name for path in tmp_path.iterdir()] == []  # nothing left behind

    writer.put(_keys(2, 1), np.full((2, 6), 2.0, np.float32))  # another dimension now fits

    assert reader.dim == 6
    assert reader.get(_keys(3)).missing == [_keys(1)[0]]
    assert reader.get(_keys(2, 1)).vectors_N_D.tolist() == [[2.0] * 6] * 2
    assert writer.clear() == 2 and writer.clear() == 0


def _put_from_another_process(root: Path, start: int) -> None:
    EmbeddingStore(root).space("s").put(_keys(50, start), np.full((50, 8), start, np.float32))


def test_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_put_from_another_process, args=(tmp_path, start))
        for start in (0, 50, 100, 150)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    found = EmbeddingStore(tmp_path).space("s").get(_keys(200))

    assert found.missing == []
    assert found.vectors_N_D[:, 0].tolist() == [float(i // 50 * 50) for i in range(200)]

"""On-disk storage: stable hashes, atomic writes, record round trips, the stage cache and resumable arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly_clustering.records import AnomalyMaps, Clustering, Embeddings, Region, Regions
from anomaly_clustering.store import (
    ShardedArrayWriter,
    StageCache,
    StoreError,
    atomic_dir,
    atomic_write_text,
    load_object,
    load_record,
    save_object,
    save_record,
    stable_hash,
)


def test_stable_hash_ignores_dict_order_but_not_values():
    a = stable_hash({"x": 1, "y": [1, 2]}, np.arange(3))
    assert a == stable_hash({"y": [1, 2], "x": 1}, np.arange(3))
    assert a != stable_hash({"x": 2, "y": [1, 2]}, np.arange(3))
    assert a != stable_hash({"x": 1, "y": [1, 2]}, np.arange(4))
    assert len(a) == 24 and stable_hash((1, 2)) == stable_hash([1, 2])


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_dir(final) as tmp:  # replaces the old folder whole
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    atomic_write_text(tmp_path / "t.txt", "hello")
    assert (tmp_path / "t.txt").read_text() == "hello"


def test_records_round_trip(tmp_path):
    maps = AnomalyMaps(np.random.rand(2, 4, 4).astype(np.float32), np.array([0.1, 0.9]), np.array([[8, 8], [9, 7]]), {"m": "x"})
    regions = Regions(np.zeros((2, 4, 4), bool), np.array([0.5, 0.5]), (Region(1, (0, 0, 2, 2), 4, 0.9),))
    emb = Embeddings(np.ones((3, 5), np.float32), np.array([0, 1, 1]), 2, np.array([1.0, 2.0, 1.0]))
    clus = Clustering(np.array([0, 1]), 2, {2: 0.5, 3: 0.1}, "silhouette", np.eye(2))
    for name, rec, cls in (("m", maps, AnomalyMaps), ("r", regions, Regions), ("e", emb, Embeddings), ("c", clus, Clustering)):
        save_record(tmp_path / name, rec)
        back = load_record(tmp_path / name, cls)
        for field in rec.__dataclass_fields__:
            a, b = getattr(rec, field), getattr(back, field)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b, field
    with pytest.raises(StoreError, match="holds a Clustering, expected AnomalyMaps"):
        load_record(tmp_path / "c", AnomalyMaps)
    with pytest.raises(StoreError, match="unreadable record"):
        load_record(tmp_path / "absent", AnomalyMaps)


def test_objects_and_corrupt_pickles(tmp_path):
    save_object(tmp_path / "o.pkl", {"a": np.arange(3)})
    assert load_object(tmp_path / "o.pkl")["a"].tolist() == [0, 1, 2]
    (tmp_path / "o.pkl").write_bytes(b"\x80\x05garbage")
    with pytest.raises(StoreError, match="o.pkl: cannot load fitted component"):
        load_object(tmp_path / "o.pkl")


def test_stage_cache_verifies_checksums(tmp_path):
    cache = StageCache(tmp_path)
    assert cache.lookup("s", "k") is None
    with cache.entry("s", "k") as tmp:
        (tmp / "data.bin").write_bytes(b"0123456789")
    hit = cache.lookup("s", "k")
    assert hit is not None and json.loads((hit / "_COMPLETE").read_text())["data.bin"][0] == 10
    (hit / "data.bin").write_bytes(b"0123456780")  # same size, different content
    assert cache.lookup("s", "k") is None and not (tmp_path / "s" / "k").exists()
    with pytest.raises(ValueError):
        with cache.entry("s", "k2") as tmp:
            (tmp / "x").write_text("half")
            raise ValueError("crash mid-write")
    assert cache.lookup("s", "k2") is None


def test_sharded_writer_resumes_and_redoes_corrupt_shards(tmp_path):
    w = ShardedArrayWriter(tmp_path / "arr", (10, 2), np.float32, 4)
    assert w.n_shards == 3 and w.pending() == [0, 1, 2]
    w.write(0, np.ones((4, 2)))
    w.write(2, np.full((2, 2), 3.0))
    w.close()
    w = ShardedArrayWriter(tmp_path / "arr", (10, 2), np.float32, 4)
    assert w.pending() == [1]
    w.close()
    torn = np.lib.format.open_memmap(tmp_path / "arr" / "data.npy", mode="r+")
    torn[0, 0] = 7.0  # a torn shard: its checksum no longer matches
    torn.flush()
    del torn
    w = ShardedArrayWriter(tmp_path / "arr", (10, 2), np.float32, 4)
    assert w.pending() == [0, 1]
    w.close()
    w = ShardedArrayWriter(tmp_path / "arr", (12, 2), np.float32, 4)  # another layout starts over
    assert w.pending() == [0, 1, 2]
    w.close()


def test_npy_rows_reads_like_the_array(tmp_path):
    """Features are read by rows with pread (no memory map): every index form gives what NumPy gives."""
    from anomaly_clustering.store import NpyRows

    arr = np.arange(7 * 3 * 2, dtype=np.float16).reshape(7, 3, 2)
    np.save(tmp_path / "a.npy", arr)
    rows = NpyRows(tmp_path / "a.npy")
    assert rows.shape == arr.shape and len(rows) == 7 and rows.dtype == arr.dtype
    np.testing.assert_array_equal(rows[2], arr[2])
    np.testing.assert_array_equal(rows[-1], arr[-1])
    np.testing.assert_array_equal(rows[1:5], arr[1:5])
    np.testing.assert_array_equal(rows[[4, 0, 1, 2, 6]], arr[[4, 0, 1, 2, 6]])
    np.testing.assert_array_equal(rows[np.array([True, False] * 3 + [True])], arr[::2])
    np.testing.assert_array_equal(np.asarray(rows), arr)
    with pytest.raises(IndexError):
        rows[7]
    import pickle

    np.testing.assert_array_equal(pickle.loads(pickle.dumps(rows))[3], arr[3])
    # a truncated file is an error, not garbage
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "b.npy").write_bytes(data[:-10])
    with pytest.raises(StoreError, match="shorter"):
        NpyRows(tmp_path / "b.npy")[6]


def test_components_pickled_before_the_folder_move_still_load(tmp_path):
    """A run fitted when the scikit-learn clusterers lived in plugins/clusterers/ still loads for predict."""
    import pickle

    from anomaly_clustering.plugins.common.clusterers import WardClusterer
    from anomaly_clustering.store import load_object

    data = pickle.dumps(WardClusterer(n_clusters=3), protocol=0)
    old = data.replace(b"anomaly_clustering.plugins.common.clusterers", b"anomaly_clustering.plugins.clusterers.sklearn_clusterers")
    assert old != data
    path = tmp_path / "clusterer.pkl"
    path.write_bytes(old)
    loaded = load_object(path)
    assert isinstance(loaded, WardClusterer) and loaded.n_clusters == 3

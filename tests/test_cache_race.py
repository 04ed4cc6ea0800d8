"""Two processes writing the same cache key at once: both succeed, the entry is whole, and a reader polling it
meanwhile never sees a torn, vanishing or changing entry (stage entries and backbone features alike)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import traceback
from pathlib import Path

import numpy as np

from anomaly_clustering.store import StageCache

ROUNDS = 12


def _content(i: int) -> np.ndarray:
    return np.full((256, 1024), i, np.float32)  # 1 MiB: the write takes long enough to overlap


def _writer(root: str, barrier, errors) -> None:
    cache = StageCache(root)
    try:
        for i in range(ROUNDS):
            barrier.wait(timeout=60)
            with cache.entry("stage", f"key{i}") as tmp:
                np.save(tmp / "data.npy", _content(i))
                (tmp / "meta.txt").write_text(str(i))
    except Exception:  # noqa: BLE001 - reported to the test
        errors.put(traceback.format_exc())


def _reader(root: str, stop, errors) -> None:
    cache = StageCache(root)
    try:
        while not stop.is_set():
            for i in range(ROUNDS):
                hit = cache.lookup("stage", f"key{i}", verify=False)
                if hit is None:
                    continue
                data = np.load(hit / "data.npy")
                if (hit / "meta.txt").read_text() != str(i) or not np.array_equal(data, _content(i)):
                    errors.put(f"key{i}: torn entry")
    except Exception:  # noqa: BLE001 - a file that vanished under the reader, a truncated array
        errors.put(traceback.format_exc())


def test_two_processes_write_the_same_stage_key(tmp_path) -> None:
    ctx = mp.get_context("fork")
    barrier, errors, stop = ctx.Barrier(2), ctx.Queue(), ctx.Event()
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), barrier, errors)) for _ in range(2)]
    reader = ctx.Process(target=_reader, args=(str(tmp_path), stop, errors))
    reader.start()
    for p in writers:
        p.start()
    for p in writers:
        p.join(120)
    stop.set()
    reader.join(60)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, problems[0]
    assert [p.exitcode for p in writers] == [0, 0]
    cache = StageCache(tmp_path)
    for i in range(ROUNDS):
        hit = cache.lookup("stage", f"key{i}", verify=True)
        assert hit is not None and np.array_equal(np.load(hit / "data.npy"), _content(i))
    assert not [p.name for p in (tmp_path / "stage").iterdir() if p.name.startswith(".")]  # no temporary left


def _extract(cache_dir: str, data: str, barrier, results) -> None:
    from anomaly_clustering import runtime
    from anomaly_clustering.backbones import FeatureSpec, extract_features
    from anomaly_clustering.data import load_image_set

    try:
        images = load_image_set(data)
        with runtime.settings(device="cpu", quiet=True, cache_dir=cache_dir):
            barrier.wait(timeout=120)
            feats = extract_features(images, FeatureSpec(input_size=64), shard_size=4)
            digest = hashlib.sha256(np.ascontiguousarray(np.asarray(feats.data[:])).tobytes()).hexdigest()
        results.put(("ok", digest))
    except Exception:  # noqa: BLE001 - reported to the test
        results.put(("error", traceback.format_exc()))


def test_two_processes_extract_the_same_features(tmp_path, example_data) -> None:
    ctx = mp.get_context("spawn")  # torch in the children: no fork
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_extract, args=(str(tmp_path), str(example_data), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(kind == "ok" for kind, _ in outcomes), [msg for kind, msg in outcomes if kind != "ok"][0]
    assert outcomes[0][1] == outcomes[1][1]
    entries = [p for p in (Path(tmp_path) / "features").iterdir() if not p.name.startswith(".")]
    assert [p.suffix for p in entries if p.is_dir()] == [""], entries  # one sealed entry, no .partial left
    assert StageCache(tmp_path).lookup("features", next(p.name for p in entries if p.is_dir())) is not None

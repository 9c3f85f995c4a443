"""The content-addressed feature cache: keys, shards, checksums, corruption, concurrency."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmdata.features.cache import (
    INDEX_NAME,
    FeatureCache,
    encoder_key,
    entry_key,
    link_tree,
    tensor_checksum,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


EK = encoder_key("thumbnail", "mmdata-thumbnail-1", sha("prep"))


def filled(tmp_path: Path, n: int = 5, enc: str = EK) -> tuple[list[str], list[torch.Tensor]]:
    keys = [entry_key(sha(f"medium {i}"), enc) for i in range(n)]
    tensors = [torch.arange(4, dtype=torch.float32) + i for i in range(n)]
    with FeatureCache(tmp_path, enc) as cache:
        cache.put(keys, tensors)
    return keys, tensors


def test_the_key_changes_exactly_when_content_encoder_revision_or_preprocessing_change():
    base = dict(encoder_id="thumbnail", revision="r1", preprocessing_hash=sha("p1"))
    ek = encoder_key(**base)
    assert encoder_key(**base) == ek
    for field, other in [
        ("encoder_id", "logmel"),
        ("revision", "r2"),
        ("preprocessing_hash", sha("p2")),
    ]:
        assert encoder_key(**{**base, field: other}) != ek
    k = entry_key(sha("a"), ek)
    assert entry_key(sha("a"), ek) == k
    assert entry_key(sha("b"), ek) != k
    assert entry_key(sha("a"), encoder_key(**{**base, "revision": "r2"})) != k


def test_put_then_lookup_in_a_new_process_state_returns_the_same_tensors(tmp_path):
    keys, tensors = filled(tmp_path)
    cache = FeatureCache(tmp_path, EK)
    found, missing = cache.lookup([*keys, "f" * 64])
    assert missing == ["f" * 64]
    for k, t in zip(keys, tensors, strict=True):
        assert torch.equal(found[k], t)
    assert (cache.stats.hits, cache.stats.misses, cache.stats.corrupt) == (5, 1, 0)
    assert [t.tolist() for t in cache.get(keys[:2])] == [[0, 1, 2, 3], [1, 2, 3, 4]]
    shards = sorted(p.name for p in (tmp_path / EK).glob("shard-*"))
    assert shards == ["shard-00001.safetensors"]
    index = pq.read_table(tmp_path / EK / INDEX_NAME).to_pylist()
    assert {r["key"] for r in index} == set(keys)
    assert all(r["checksum"] == tensor_checksum(found[r["key"]]) for r in index)


def test_shards_are_immutable_and_new_entries_go_to_new_shards(tmp_path):
    filled(tmp_path, 3)
    before = (tmp_path / EK / "shard-00001.safetensors").read_bytes()
    more = [entry_key(sha(f"new {i}"), EK) for i in range(7)]
    with FeatureCache(tmp_path, EK, shard_entries=4) as cache:
        cache.put(more, [torch.full((2,), float(i)) for i in range(7)])
    assert (tmp_path / EK / "shard-00001.safetensors").read_bytes() == before
    assert len(list((tmp_path / EK).glob("shard-*"))) == 3  # 3 old + 4 + 3 new entries
    assert len(FeatureCache(tmp_path, EK)) == 10


def test_corrupt_shard_bytes_are_detected_and_the_entry_reported_missing(tmp_path):
    keys, _ = filled(tmp_path)
    shard = tmp_path / EK / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # a byte of the last tensor's data
    shard.write_bytes(bytes(data))
    cache = FeatureCache(tmp_path, EK)
    found, missing = cache.lookup(keys)
    assert len(missing) == 1 and len(found) == 4
    assert cache.stats.corrupt == 1 and cache.stats.corrupt_keys == missing
    # The bad entry is dropped from the index; recomputing it makes it whole again.
    assert missing[0] not in FeatureCache(tmp_path, EK).index
    with FeatureCache(tmp_path, EK) as again:
        again.put(missing, [torch.zeros(4)])
    fresh = FeatureCache(tmp_path, EK)
    assert fresh.lookup(keys)[1] == [] and fresh.stats.corrupt == 0


def test_a_truncated_shard_makes_all_its_entries_corrupt(tmp_path):
    keys, _ = filled(tmp_path)
    shard = tmp_path / EK / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:40])
    cache = FeatureCache(tmp_path, EK)
    assert cache.lookup(keys) == ({}, keys)
    assert cache.stats.corrupt == 5


def test_an_index_checksum_mismatch_is_detected(tmp_path):
    keys, _ = filled(tmp_path)
    path = tmp_path / EK / INDEX_NAME
    table = pq.read_table(path)
    sums = table.column("checksum").to_pylist()
    sums[2] = "0" * 64
    pq.write_table(
        table.set_column(table.schema.get_field_index("checksum"), "checksum", pa.array(sums)), path
    )
    cache = FeatureCache(tmp_path, EK)
    _, missing = cache.lookup(keys)
    assert missing == [keys[sorted(range(5), key=lambda i: keys[i])[2]]]
    assert cache.stats.corrupt == 1


def test_a_lost_or_unreadable_index_is_rebuilt_from_the_shards(tmp_path):
    keys, tensors = filled(tmp_path)
    (tmp_path / EK / INDEX_NAME).write_bytes(b"garbage")
    found, missing = FeatureCache(tmp_path, EK).lookup(keys)
    assert missing == [] and torch.equal(found[keys[1]], tensors[1])
    (tmp_path / EK / INDEX_NAME).unlink()
    assert FeatureCache(tmp_path, EK).lookup(keys)[1] == []


def test_a_missing_shard_counts_as_corrupt(tmp_path):
    keys, _ = filled(tmp_path)
    (tmp_path / EK / "shard-00001.safetensors").unlink()
    cache = FeatureCache(tmp_path, EK)
    assert cache.lookup(keys)[1] == keys and cache.stats.corrupt == 5


def test_encoders_never_share_entries(tmp_path):
    other = encoder_key("thumbnail", "mmdata-thumbnail-1", sha("other prep"))
    keys, _ = filled(tmp_path)
    assert FeatureCache(tmp_path, other).lookup(keys)[1] == keys
    assert sorted(p.name for p in tmp_path.iterdir()) == [EK]


def _writer(root: str, tag: str) -> None:
    keys = [entry_key(sha(f"{tag} {i}"), EK) for i in range(50)]
    for i in range(0, 50, 10):  # five flushes, interleaving with the other process
        with FeatureCache(root, EK) as cache:
            cache.put(keys[i : i + 10], [torch.full((3,), float(j)) for j in range(i, i + 10)])


def test_two_writers_at_once_lose_nothing(tmp_path):
    # flock excludes separate open files even within one process, so threads exercise the
    # same locking as processes do (and start in milliseconds).
    writers = [threading.Thread(target=_writer, args=(str(tmp_path), t)) for t in ("a", "b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    cache = FeatureCache(tmp_path, EK)
    assert len(cache) == 100
    keys = [entry_key(sha(f"{t} {i}"), EK) for t in "ab" for i in range(50)]
    found, missing = cache.lookup(keys)
    assert missing == [] and found[keys[57]].tolist() == [7.0, 7.0, 7.0]
    shards = sorted(p.name for p in (tmp_path / EK).glob("shard-*"))
    assert shards == [f"shard-{i:05d}.safetensors" for i in range(1, 11)]


def test_a_hard_linked_copy_of_a_cache_is_a_cache(tmp_path):
    keys, _ = filled(tmp_path / "a")
    assert link_tree(tmp_path / "a", tmp_path / "b") == 2  # shard + index
    assert FeatureCache(tmp_path / "b", EK).lookup(keys)[1] == []


def test_only_float_tensors_are_stored_and_shard_metadata_lists_entries(tmp_path):
    with pytest.raises(ValueError, match="not a float type"):
        FeatureCache(tmp_path, EK).put(["k"], [torch.zeros(2, dtype=torch.int64)])
    filled(tmp_path, 2)
    from safetensors import safe_open

    with safe_open(str(tmp_path / EK / "shard-00001.safetensors"), framework="pt") as fh:
        meta = json.loads(fh.metadata()["mmdata.entries"])
    assert len(meta) == 2 and all(len(e["checksum"]) == 64 for e in meta.values())

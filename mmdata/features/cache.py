"""The feature cache: encoder outputs keyed by content, stored in safetensors shards.

Keys. An *encoder key* names one encoder exactly as it computes::

    encoder_key = sha256({"encoder": id, "revision": weights hash, "preprocessing": config hash})

and an *entry key* names one medium's features under that encoder::

    entry_key = sha256(content sha256 + "\\0" + encoder_key)

so a new medium, a retrained model (new weights hash) or a changed preprocessing config
each give new keys, and only the entries they touch are recomputed.

Layout, one folder per encoder key (entries of different encoders never mix)::

    <cache_dir>/<encoder_key>/
        shard-00001.safetensors     one tensor per entry key (immutable once written)
        index.parquet               entry key -> shard, dtype, shape, sha256 of the tensor bytes
        .lock                       flock taken while a shard is added and the index rewritten

Shards are never modified: new entries go to a new shard, and the index is rewritten
atomically (temp file + rename) under the folder's lock, merging what other processes added
meanwhile. Every read checks the tensor bytes against the index checksum; an entry whose
shard is missing, unreadable or changed is reported as corrupt, dropped from the index and
treated as a miss, so the caller recomputes it. Each shard also carries its entries'
checksums in its safetensors metadata, so a lost index is rebuilt from the shards.

>>> import tempfile, torch
>>> ek = encoder_key("thumbnail", "builtin-1", "p0")
>>> keys = [entry_key("ab" * 32, ek)]
>>> with FeatureCache(tempfile.mkdtemp(), ek) as cache:
...     cache.put(keys, [torch.ones(3)])
>>> cache = FeatureCache(cache.cache_dir, ek)
>>> found, missing = cache.lookup(keys)
>>> found[keys[0]].tolist(), missing, cache.stats.hits
([1.0, 1.0, 1.0], [], 1)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmdata import atomic

INDEX_NAME = "index.parquet"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.safetensors$")
_INDEX_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("shape", pa.list_(pa.int64()), nullable=False),
        pa.field("checksum", pa.string(), nullable=False),
    ]
)
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def encoder_key(encoder_id: str, revision: str, preprocessing_hash: str) -> str:
    """sha256 naming an encoder exactly: its id, weights revision and preprocessing hash.

    >>> encoder_key("logmel", "r1", "p1") == encoder_key("logmel", "r1", "p2")
    False
    """
    canon = json.dumps(
        {"encoder": encoder_id, "revision": revision, "preprocessing": preprocessing_hash},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def entry_key(content_sha256: str, enc_key: str) -> str:
    """sha256 naming one medium's features under one encoder.

    >>> len(entry_key("00" * 32, "11" * 32))
    64
    """
    return hashlib.sha256(f"{content_sha256}\0{enc_key}".encode()).hexdigest()


def tensor_checksum(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes (row-major, native little-endian).

    >>> tensor_checksum(torch.zeros(2)) == tensor_checksum(torch.zeros(2))
    True
    """
    t = tensor.detach().contiguous().cpu()
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()


@dataclass
class CacheStats:
    """What a cache did: verified hits, misses, corrupt entries found, entries written."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    computed: int = 0
    corrupt_keys: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, int]:
        """The counters (without the key list)."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "corrupt": self.corrupt,
            "computed": self.computed,
        }


@dataclass(frozen=True)
class Entry:
    """Where one entry lives and what its bytes must hash to."""

    key: str
    shard: str  # file name inside the encoder folder
    dtype: str
    shape: tuple[int, ...]
    checksum: str


def read_shard(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a shard (raises on a missing or malformed file)."""
    from safetensors.torch import load

    return load(path.read_bytes())


class FeatureCache:
    """The cache folder of one encoder: look up, read, and add feature tensors.

    Entries added with :meth:`put` are kept in memory (and served from there) until
    ``shard_entries`` of them are pending or :meth:`flush` / ``close`` writes them as one
    shard. Use it as a context manager so pending entries are written.
    """

    def __init__(
        self,
        cache_dir: Path | str,
        enc_key: str,
        *,
        shard_entries: int = 4096,
        shard_bytes: int = 64 << 20,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.encoder_key = enc_key
        self.root = self.cache_dir / enc_key
        self.shard_entries = shard_entries
        self.shard_bytes = shard_bytes
        self.stats = CacheStats()
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._index: dict[str, Entry] | None = None

    # -- context manager --------------------------------------------------------------
    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()

    # -- index --------------------------------------------------------------------------
    @property
    def index(self) -> dict[str, Entry]:
        """Entry key -> :class:`Entry` of the written entries (loaded on first use)."""
        if self._index is None:
            self._index = self._read_index()
        return self._index

    def _read_index(self) -> dict[str, Entry]:
        path = self.root / INDEX_NAME
        if not path.exists():
            return self._rebuild_index() if self._shards() else {}
        try:
            table = pq.read_table(path)
            cols = {n: table.column(n).to_pylist() for n in _INDEX_SCHEMA.names}
        except (OSError, KeyError, pa.ArrowException):
            return self._rebuild_index()  # an unreadable index: the shards still know
        return {
            k: Entry(k, s, d, tuple(shape), c)
            for k, s, d, shape, c in zip(
                cols["key"],
                cols["shard"],
                cols["dtype"],
                cols["shape"],
                cols["checksum"],
                strict=True,
            )
        }

    def _shards(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _SHARD_RE.match(p.name))

    def _rebuild_index(self) -> dict[str, Entry]:
        """Index every readable shard from its metadata (later shards win)."""
        from safetensors import safe_open

        found: dict[str, Entry] = {}
        for name in self._shards():
            try:
                with safe_open(str(self.root / name), framework="pt") as fh:
                    meta = json.loads((fh.metadata() or {}).get("mmdata.entries", "{}"))
            except Exception:  # an unreadable shard indexes nothing  # noqa: S112
                continue
            for key, e in meta.items():
                found[key] = Entry(key, name, e["dtype"], tuple(e["shape"]), e["checksum"])
        return found

    def _write_index(self, index: dict[str, Entry]) -> None:
        rows = [index[k] for k in sorted(index)]
        table = pa.table(
            {
                "key": [e.key for e in rows],
                "shard": [e.shard for e in rows],
                "dtype": [e.dtype for e in rows],
                "shape": [list(e.shape) for e in rows],
                "checksum": [e.checksum for e in rows],
            },
            schema=_INDEX_SCHEMA,
        )
        atomic.write_parquet(self.root / INDEX_NAME, table)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+", encoding="utf-8") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- reading ------------------------------------------------------------------------
    def lookup(self, keys: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Verified tensors of the cached ``keys`` and the keys to compute (in order).

        A corrupt entry (shard missing or unreadable, tensor absent, bytes not matching the
        checksum) counts in ``stats.corrupt``, is dropped from the index and is returned
        as missing.
        """
        found: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        by_shard: dict[str, list[str]] = {}
        for key in dict.fromkeys(keys):
            if key in self._pending:
                found[key] = self._pending[key]
            elif key in self.index:
                by_shard.setdefault(self.index[key].shard, []).append(key)
        corrupt: list[str] = []
        for shard, shard_keys in sorted(by_shard.items()):
            try:
                tensors = read_shard(self.root / shard)
            except Exception:  # missing or malformed shard: every entry in it is corrupt
                corrupt.extend(shard_keys)
                continue
            for key in shard_keys:
                t = tensors.get(key)
                if t is None or not self._valid(self.index[key], t):
                    corrupt.append(key)
                else:
                    found[key] = t
        if corrupt:
            self._drop(corrupt)
        for key in dict.fromkeys(keys):
            if key not in found:
                missing.append(key)
        self.stats.hits += len(found)
        self.stats.misses += len(missing)
        return found, missing

    @staticmethod
    def _valid(entry: Entry, t: torch.Tensor) -> bool:
        return (
            str(t.dtype).removeprefix("torch.") == entry.dtype
            and tuple(t.shape) == entry.shape
            and tensor_checksum(t) == entry.checksum
        )

    def _drop(self, keys: list[str]) -> None:
        self.stats.corrupt += len(keys)
        self.stats.corrupt_keys.extend(keys)
        bad = {key: self.index.pop(key) for key in keys if key in self.index}
        with self._locked():
            on_disk = self._read_index()
            # Another process may have rewritten an entry meanwhile: drop only what we read.
            for key, entry in bad.items():
                if on_disk.get(key) == entry:
                    on_disk.pop(key)
            self._write_index(on_disk)

    def get(self, keys: Sequence[str]) -> list[torch.Tensor]:
        """Verified tensors of ``keys``, in order; raises ``KeyError`` naming a missing one.

        >>> import tempfile
        >>> FeatureCache(tempfile.mkdtemp(), "e" * 64).get(["k"])
        Traceback (most recent call last):
        ...
        KeyError: "feature cache has no valid entry 'k' (missing or corrupt): recompute it"
        """
        found, missing = self.lookup(keys)
        if missing:
            raise KeyError(
                f"feature cache has no valid entry {missing[0]!r} (missing or corrupt): "
                "recompute it"
            )
        return [found[k] for k in keys]

    def locate(self, key: str) -> tuple[Path, Entry]:
        """Shard path and index entry of a written key (call :meth:`flush` first)."""
        entry = self.index[key]
        return self.root / entry.shard, entry

    # -- writing ------------------------------------------------------------------------
    def put(self, keys: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
        """Add computed entries; they are written as a shard when enough are pending."""
        if len(keys) != len(tensors):
            raise ValueError(f"put: {len(keys)} keys but {len(tensors)} tensors")
        for key, t in zip(keys, tensors, strict=True):
            t = t.detach().cpu().contiguous().clone()  # own storage: shards save no views
            if str(t.dtype).removeprefix("torch.") not in _DTYPES:
                raise ValueError(f"put: dtype {t.dtype} of entry {key!r} is not a float type")
            if key not in self._pending:
                self.stats.computed += 1
            self._pending[key] = t
            self._pending_bytes += t.nbytes
            if len(self._pending) >= self.shard_entries or self._pending_bytes >= self.shard_bytes:
                self.flush()

    def flush(self) -> None:
        """Write pending entries as a new shard and merge them into the index."""
        if not self._pending:
            return
        from safetensors.torch import save

        pending = {k: self._pending[k] for k in sorted(self._pending)}
        made = {
            k: Entry(k, "", str(t.dtype).removeprefix("torch."), tuple(t.shape), tensor_checksum(t))
            for k, t in pending.items()
        }
        meta = {
            k: {"dtype": e.dtype, "shape": list(e.shape), "checksum": e.checksum}
            for k, e in made.items()
        }
        data = save(pending, metadata={"mmdata.entries": json.dumps(meta, sort_keys=True)})
        with self._locked():
            numbers = [int(m.group(1)) for n in self._shards() if (m := _SHARD_RE.match(n))]
            name = f"shard-{max(numbers, default=0) + 1:05d}.safetensors"
            atomic.write_bytes(self.root / name, data)
            index = self._read_index()  # what other processes added meanwhile
            for k, e in made.items():
                index[k] = replace(e, shard=name)
            self._write_index(index)
        self._index = index
        self._pending = {}
        self._pending_bytes = 0

    def __len__(self) -> int:
        return len(self.index) + sum(1 for k in self._pending if k not in self.index)


def link_tree(src: Path, dst: Path) -> int:
    """Mirror ``src``'s files into ``dst`` with hard links (copies where links fail).

    Shards are immutable, so a linked copy of a cache is as good as the cache. Returns the
    number of files mirrored.
    """
    import shutil

    n = 0
    for dirpath, _dirs, files in os.walk(src):
        for name in sorted(files):
            if name == ".lock":
                continue
            s = Path(dirpath) / name
            d = dst / s.relative_to(src)
            d.parent.mkdir(parents=True, exist_ok=True)
            if d.exists():
                continue
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)
            n += 1
    return n

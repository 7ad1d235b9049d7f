"""Keys of resumable caches: a short stable hash of JSON-able parts, and SHA-256 of files.

A run id (pre-training checkpoints, a fine-tuning stage, an evaluation task) is
``digest(params, file hashes, model fingerprint, ...)``: the same inputs give the same
key on any machine, any change gives a new one. Hashing a 15 GB weight file takes
~40 s, so ``file_hash`` remembers each file's hash by (real path, size, mtime, inode)
in ``.cache/medlab/fingerprints.json`` and reads the bytes again only when one changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

MIB = 2 ** 20


def digest(*parts: object) -> str:
    """Short stable hash of JSON-able parts (params, data hashes, seed): key order ignored."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _memo_path() -> Path | None:
    from medlab.paths import cache_dir

    try:
        return cache_dir("fingerprints.json")
    except FileNotFoundError:  # outside a medlab repository: no memo, hash every time
        return None


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, memoised by (real path, size, mtime, inode)."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    memo_file = _memo_path()
    memo = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except ValueError:
            memo = {}  # a torn write: start again
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MIB):
            digest.update(chunk)
    memo[key] = digest.hexdigest()
    if memo_file is not None:
        from medlab.records import atomic_write_text

        memo_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo_file, json.dumps(memo, indent=0))
    return memo[key]


def file_hashes(paths: Iterable[Path]) -> list[str]:
    """SHA-256 of each file's bytes (memoised), for run keys."""
    return [file_hash(Path(p)) for p in paths]

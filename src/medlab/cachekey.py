"""Keys of resumable caches: a short stable hash of JSON-able parts, SHA-256 of files, and
the hash of the code that computes a result.

A run id (pre-training checkpoints, a fine-tuning stage, an evaluation task) is
``digest(code_hash(entry module), params, file hashes, model fingerprint, ...)``: the
same code and inputs give the same key on any machine, any change gives a new one.
``code_hash`` reads the source of the entry module and of every medlab module it
imports, directly or not (``medlab.codegraph``), with the package data they name: edit a
function body in ``finetune/sft.py`` and every fine-tuning stage key changes; edit
``filter/dedup.py`` and no evaluation key does. No hand-bumped version constant. Hashing a 15 GB weight file takes
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


# params.yaml's loader validates every section; the values it returns enter keys as
# values, so its own code is left out of code hashes (a new key in one section's model
# would otherwise recompute every cached result of every stage).
LOADER = "medlab.config"


def code_files(*entries: str, package: Path | None = None) -> list[Path]:
    """The source files and package data that modules ``entries`` run: their import
    closure (``medlab.codegraph``), without params.yaml's loader."""
    from medlab import codegraph

    known = codegraph.modules(package)
    unknown = [e for e in entries if e not in known]
    if unknown:
        raise KeyError(f"code_hash: no module {unknown} in {package or codegraph.package_dir()}")
    skip = {m for m in known if m == LOADER or m.startswith(LOADER + ".")}
    files = set()
    for name in codegraph.closure(set(entries), known, skip=skip):
        files.add(known[name])
        for entry in codegraph.data_files(known[name]):
            files.update(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else files.add(entry)
    return sorted(f for f in files if "__pycache__" not in f.parts)


_CODE_HASHES: dict[tuple, str] = {}


def code_hash(*entries: str, package: Path | None = None) -> str:
    """Hash of the bytes of every file ``entries`` run (``code_files``), by path relative
    to the package: the same on any machine and in any clone of the same commit.

    Remembered for this process while no file of the package changes (size, mtime): an
    evaluation asks for it once per task, and parsing the closure costs ~0.2 s."""
    from medlab import codegraph

    package = package or codegraph.package_dir()
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(package.rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts)
    memo = (entries, str(package), stamp)
    if memo not in _CODE_HASHES:
        _CODE_HASHES[memo] = _hash_files(package, code_files(*entries, package=package))
    return _CODE_HASHES[memo]


def _hash_files(package: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(package.parent).as_posix()).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def result_key(stage: str, code: tuple[str, ...], *parts: object) -> str:
    """Key of a cached result -- a fine-tuning stage, an evaluation or probe task, a
    pre-training run's checkpoints: the stage that computes it, the hash of the code that
    computes it (``code_hash`` of its entry modules) and everything else that determines
    it (params, input file hashes, model fingerprint, item ids, seed)."""
    return digest(stage, code_hash(*code), *parts)


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

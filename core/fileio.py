"""Atomic file writes (temp file in the same directory + rename) and the one safe reader of files a user hands
over: specs, arch files, latency tables, dataset JSON and images, checkpoints, a run directory's files.

A user's file is stat-ed before it is opened (a FIFO would block forever; a directory or device is no file),
refused above a size cap for its kind without being read, decoded as UTF-8, and parsed with a limit on nesting
and, for YAML, on what aliases expand to. Whatever is wrong is a NascoreError naming the file and what was
expected, within seconds.
"""
from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from .errors import NascoreError

MiB, GiB = 1 << 20, 1 << 30
#: size caps (bytes) per kind of file: a larger file is refused unread. Checkpoints have none (they are as large as
#: their weights); a foreign or corrupt one is refused from its first bytes and its zip directory.
SPEC_MAX_BYTES = 4 * MiB  # specs, a run's spec.yaml
ARCH_MAX_BYTES = 4 * MiB  # arch.json, branch_config.json
LUT_MAX_BYTES = 256 * MiB  # latency lookup tables
DATASET_JSON_MAX_BYTES = 2 * GiB  # COCO annotations (COCO 2017 train: 450 MB)
METRICS_MAX_BYTES = 256 * MiB  # a run's metrics.jsonl
IMAGE_MAX_BYTES = 256 * MiB  # one dataset image or mask
#: nesting limit of YAML and JSON documents (lists and mappings), aliases expanded
MAX_DEPTH = 100
#: values a YAML document may expand to (each alias counted as what it stands for): no alias bombs
MAX_YAML_NODES = 100_000

# -- writing -------------------------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp file beside ``path`` for the block to write: renamed onto ``path`` when the block ends, with the
    permissions of an ordinary new file (``mkstemp`` makes it private); removed when the block raises. It ends
    in ``path``'s suffix (``.a.x1y2.tmp.pt2``), as some writers (``torch.export.save``) go by it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic(path: str | Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


# -- reading a user's file -------------------------------------------------------------------------------
def human_size(n: int) -> str:
    """``n`` bytes for a message: "3.0 GiB", "12 bytes"."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")


def check_user_file(path: str | Path, what: str, max_bytes: int | None = None) -> os.stat_result:
    """``path``'s stat (symlinks followed) if it is a regular file of at most ``max_bytes``; else a NascoreError
    saying what it is (missing, a dangling symlink or a loop, a directory, a FIFO, too large)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise NascoreError(f"{what} {path} is a symlink to {os.readlink(path)}, which does not exist; "
                               "expected a file") from None
        raise NascoreError(f"{what} {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NascoreError(f"{what} {path} is a symlink loop; expected a file") from None
        raise NascoreError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NascoreError(f"{what} {path} is {_kind(st.st_mode)}; expected a file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise NascoreError(f"{what} {path} is {human_size(st.st_size)}; expected at most {human_size(max_bytes)} "
                           "(larger files are refused unread)")
    return st


def _open_user(path: str | Path, what: str, max_bytes: int | None = None) -> Any:
    """A user's file opened for reading (binary) after ``check_user_file``; opened non-blocking and checked
    again, so a file swapped for a FIFO in between cannot hang the read."""
    check_user_file(path, what, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise NascoreError(f"{what} {path} cannot be read: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NascoreError(f"{what} {path} is {_kind(mode)}; expected a file")
    return os.fdopen(fd, "rb")


def read_user_bytes(path: str | Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a user's file, never more than ``max_bytes`` read."""
    with _open_user(path, what, max_bytes) as f:
        try:
            wanted = min(os.fstat(f.fileno()).st_size, max_bytes) + 1
            data = f.read(wanted)
            if len(data) == wanted <= max_bytes:  # it grew since it was stat-ed: read on, up to the cap
                data += f.read(max_bytes + 1 - len(data))
        except OSError as exc:
            raise NascoreError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise NascoreError(f"{what} {path} is larger than {human_size(max_bytes)}; expected at most that")
    return data


def read_user_text(path: str | Path, what: str, max_bytes: int) -> str:
    data = read_user_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NascoreError(f"{what} {path} is not UTF-8 text (byte {exc.start} is "
                           f"{data[exc.start:exc.start + 1]!r}); expected a text file") from None


def _python_advice_cut(exc: Exception) -> str:
    """An error's text without Python's advice to raise a limit (e.g. on the digits of an integer)."""
    return str(exc).split("; use sys.")[0]


# -- YAML -----------------------------------------------------------------------------------------------------
class _TooDeep(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops composing past ``MAX_DEPTH`` levels (the composer recurses per level)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _expansion_problem(root: yaml.Node) -> str | None:
    """What is wrong with a composed document once its aliases are expanded (too many values, too deep, an alias
    inside its own anchor), walked without recursion and each shared node counted once per use."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) expanded
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            kids = [sizes[id(k)] for k in _children(node)]
            count, depth = 1 + sum(k[0] for k in kids), 1 + max((k[1] for k in kids), default=0)
            if count > MAX_YAML_NODES:
                return (f"expands to more than {MAX_YAML_NODES:,} values (an alias bomb?); expected at most "
                        f"{MAX_YAML_NODES:,}, aliases counted as what they stand for")
            if depth > MAX_DEPTH:
                return f"nests deeper than {MAX_DEPTH} levels, aliases expanded; expected at most {MAX_DEPTH}"
            sizes[key] = (count, depth)
        elif key not in sizes:
            if key in open_:
                return "has an alias inside its own anchor (a recursive document); expected plain data"
            open_.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in _children(node) if id(k) not in sizes)
    return None


def yaml_error(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line, column) and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


def parse_user_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` of ``text`` with limits on nesting and alias expansion; ``what`` names the text in
    errors (e.g. "spec file s.yaml")."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problem = _expansion_problem(node)
        if problem:
            raise NascoreError(f"{what} {problem}")
        return loader.construct_document(node)
    except _TooDeep:
        raise NascoreError(f"{what} nests deeper than {MAX_DEPTH} levels; expected at most {MAX_DEPTH}") from None
    except yaml.YAMLError as exc:
        raise NascoreError(f"{what} is not valid YAML: {yaml_error(exc)}") from None
    except (ValueError, OverflowError, TypeError) as exc:  # a tagged or implicit value Python cannot build
        raise NascoreError(f"{what} holds a value that cannot be read: {_python_advice_cut(exc)}") from None
    finally:
        loader.dispose()


def load_user_yaml(path: str | Path, what: str, max_bytes: int = SPEC_MAX_BYTES) -> Any:
    return parse_user_yaml(read_user_text(path, what, max_bytes), f"{what} {path}")


# -- JSON -----------------------------------------------------------------------------------------------------
def _json_depth(data: Any) -> int:
    """Nesting depth of parsed JSON, level by level (no recursion)."""
    depth, level = 0, [data] if isinstance(data, (list, dict)) else []
    while level:
        depth += 1
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, (list, dict))]
    return depth


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_user_json(text: str, what: str, finite: bool = False) -> Any:
    """``json.loads`` of ``text`` with a nesting limit; ``finite`` refuses NaN and Infinity."""
    try:
        data = json.loads(text, **({"parse_constant": _no_constant} if finite else {}))
    except RecursionError:
        data = None
    except ValueError as exc:  # JSONDecodeError, NaN when finite, integers longer than Python converts
        raise NascoreError(f"{what} is not valid JSON: {_python_advice_cut(exc)}") from None
    else:
        if _json_depth(data) <= MAX_DEPTH:
            return data
    raise NascoreError(f"{what} nests deeper than {MAX_DEPTH} levels; expected at most {MAX_DEPTH}")


def load_user_json(path: str | Path, what: str, max_bytes: int, finite: bool = False) -> Any:
    return parse_user_json(read_user_text(path, what, max_bytes), f"{what} {path}", finite)


# -- images -----------------------------------------------------------------------------------------------------
def open_user_image(path: str | Path, what: str = "image", max_bytes: int = IMAGE_MAX_BYTES) -> Any:
    """A user's image file, decoded (a PIL image); larger than PIL's decompression-bomb limit is refused."""
    from PIL import Image, UnidentifiedImageError  # Pillow: only when an image file is read

    with _open_user(path, what, max_bytes) as f:
        try:
            image = Image.open(f)
            image.load()
        except Image.DecompressionBombError as exc:
            raise NascoreError(f"{what} {path} has too many pixels: {exc}") from None
        except UnidentifiedImageError:
            raise NascoreError(f"cannot read {what} {path}: not an image file (PNG, JPEG, ... expected)") from None
        except (OSError, SyntaxError, ValueError) as exc:  # not an image, truncated, a broken header
            raise NascoreError(f"cannot read {what} {path}: {exc}") from None
    return image


# -- checkpoints ---------------------------------------------------------------------------------------------
_FOREIGN = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint"
                    ) -> dict[str, Any]:
    """Load a checkpoint (or another ``torch.save`` file: ``what`` names it) with ``weights_only=True``; a missing,
    corrupt or foreign file is a NascoreError that says what is wrong with the file (not torch's advice to load it
    unsafely)."""
    path = Path(path)
    with _open_user(path, what) as f:
        magic = f.read(4)
        if not magic:
            raise NascoreError(f"{what} {path} is empty; expected a PyTorch checkpoint")
        if magic != b"PK\x03\x04":
            raise NascoreError(f"{what} {path} is not a PyTorch checkpoint (zip archive expected)")
        try:
            entries = zipfile.ZipFile(f).infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise NascoreError(f"{what} {path} is truncated or corrupt (its zip archive is incomplete)") from None
        if any(e.compress_type != zipfile.ZIP_STORED for e in entries):  # torch.save stores; compressed: a bomb?
            raise NascoreError(f"{what} {path} holds compressed entries; expected a checkpoint as torch.save "
                               "writes it")
        f.seek(0)
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols with "please file an issue"
                warnings.simplefilter("ignore")
                obj = torch.load(f, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch's text advises loading unsafely: say what is wrong
            found = _FOREIGN.search(str(exc))
            if found:
                raise NascoreError(f"{what} {path} holds objects other than tensors and plain data ({found[1]}); "
                                   "expected a nascore checkpoint") from None
            raise NascoreError(f"{what} {path} is truncated or corrupt (torch cannot read it as a "
                               "checkpoint)") from None
    if not isinstance(obj, dict):
        raise NascoreError(f"{what} {path} holds a {type(obj).__name__}, expected a dict")
    _check_tensor_sizes(obj, path, what)
    return obj


def _check_tensor_sizes(obj: Any, path: Path, what: str) -> None:
    """Refuse a tensor that declares more values than its storage holds (an expanded or overlapping view, e.g.
    ``torch.zeros(1).expand(10**12)``: a few bytes in the file, and any copy of it allocates what it declares).
    ``torch.save`` of a module's state never writes one. Walked without recursion."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if item.layout == torch.strided and item.numel():
                stored = item.untyped_storage().nbytes() // item.element_size()
                if item.numel() > stored:
                    raise NascoreError(f"{what} {path} holds a tensor of {item.numel():,} values stored in "
                                       f"{stored:,}; expected tensors that hold their values")
        elif isinstance(item, (dict, list, tuple)) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)

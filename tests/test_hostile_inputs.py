"""Hostile input to every loader of a file a user hands over: alias bombs, deep nesting, huge (sparse) files,
binary garbage, wrong types at every level, symlinks and directories and FIFOs where a file is expected,
unreadable files. Each one must be refused with a message that names the file and what was expected, exit status
2, no traceback, within seconds (a FIFO must not block, an alias bomb must not expand), and nothing written.

The commands run in process (``nascore.cli.main``); a few run as real subprocesses with a generous timeout to
prove that they neither hang nor print a traceback. A SIGALRM guard turns an in-process hang into a failure.
"""
from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from nascore import fileio
from nascore.cli import main
from nascore.errors import NascoreError
from nascore.fileio import load_checkpoint
from test_bad_inputs import FBNET_C, check_rejected, tiny_spec
from workspace import snapshot

GiB = 1 << 30
HANG_GUARD_S = 120  # an in-process hang fails the test instead of blocking the suite; not a speed assertion
TORCH_ADVICE = ("weights_only", "will likely succeed", "file an issue", "arbitrary code")


# -- hostile files ---------------------------------------------------------------------------------------
def _bomb(name: str) -> list[str]:
    """Anchored lists of 9 aliases of the previous one, 10 levels: a billion laughs (9**10 values) expanded."""
    return [f"&{name}{i} [{', '.join(['lol' if i == 0 else f'*{name}{i - 1}'] * 9)}]" for i in range(10)]


ALIAS_BOMB = "".join(f"l{i}: {item}\n" for i, item in enumerate(_bomb("l")))
DEEP_YAML = "[" * 5000 + "]" * 5000 + "\n"
DEEP_JSON = "[" * 100_000 + "]" * 100_000


def _garbage(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00" + random.Random(0).randbytes(4096))  # never valid UTF-8, no zip magic


def _huge(path: Path) -> None:
    path.touch()
    try:
        os.truncate(path, 3 * GiB)  # sparse: no disk used, st_size 3 GiB
    except OSError as exc:
        pytest.skip(f"cannot make a sparse 3 GiB file here: {exc}")


def _unreadable(path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: a chmod 000 file is still readable")
    path.write_text("seed: 0\n")
    path.chmod(0)


#: hostile class -> (make it at a path, part of the message expected)
PATH_CLASSES: dict[str, tuple[Callable[[Path], None], str]] = {
    "dangling-symlink": (lambda p: os.symlink("nowhere", p),
                         "is a symlink to nowhere, which does not exist; expected a file"),
    "symlink-loop": (lambda p: os.symlink(p.name, p), "is a symlink loop; expected a file"),
    "directory": (lambda p: p.mkdir(), "is a directory; expected a file"),
    "fifo": (lambda p: os.mkfifo(p), "is a FIFO (named pipe); expected a file"),
    "huge-sparse": (_huge, "is 3.0 GiB; expected at most "),
    "binary-garbage": (_garbage, "is not UTF-8 text (byte 0 is b'\\xff'); expected a text file"),
    "unreadable": (_unreadable, "cannot be read: Permission denied"),
}


def write(path: Path, content: str | bytes | Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@pytest.fixture(autouse=True)
def hang_guard():
    def hung(signum, frame):
        raise TimeoutError(f"no answer within {HANG_GUARD_S} s: a hostile input hung the loader")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_GUARD_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def rejected(argv: list[str], ws: Path, capsys, *expected: str) -> str:
    """Run ``argv``: exit status 2, every expected part in the message, no traceback, nothing written."""
    before = snapshot(ws)
    code = main(argv)
    out, err = capsys.readouterr()
    check_rejected(code, out, err, expected)
    assert snapshot(ws) == before
    return err


# -- the loaders: which command reads which file -------------------------------------------------------------
def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


@dataclass
class Loader:
    argv: list[str]
    file: str  # the file the command reads, as the message must name it
    #: writes the other files the command needs into the workspace (the tiny spec given; a run directory out/)
    setup: Callable[[Path, dict], None] = lambda ws, spec: None
    kind: str = "text"  # "yaml" and "json" get the parser bombs too


def _spec_with(**blocks) -> Callable[[Path, dict], None]:
    return lambda ws, spec: (ws / "s.yaml").write_text(dump({**spec, **blocks}))


def _run_dir(ws: Path, spec: dict) -> None:
    """``out/``: a run directory as ``nascore run`` starts it, and its spec ``s.yaml``."""
    from nascore.progress import Reporter
    from nascore.rundir import open_run
    from nascore.spec import load_spec

    (ws / "s.yaml").write_text(dump(spec))
    open_run(load_spec(ws / "s.yaml"), ws / "out", resume=False, reporter=Reporter(quiet=True))


BRANCHED = {"space": {"name": "branched", "backbone": "bb.json", "input_size": 32},
            "tasks": [{"name": "classification"}, {"name": "segmentation", "channels": 8}]}
COCO = {"name": "coco", "train_json": "a.json", "train_images": "imgs", "val_json": "a.json", "val_images": "imgs"}
LUT = {"name": "latency", "lut": "t.json"}
RESUME = ["run", "s.yaml", "--out", "out", "--resume"]

LOADERS: dict[str, Loader] = {
    "spec": Loader(["run", "s.yaml", "--out", "out"], "s.yaml", kind="yaml"),
    "arch": Loader(["train", "a.json", "--spec", "s.yaml", "--out", "out"], "a.json", _spec_with(), "json"),
    "branch-config": Loader(["info", "branch_config.json"], "branch_config.json", kind="json"),
    "spec-backbone-arch": Loader(["run", "s.yaml", "--out", "out"], "bb.json", _spec_with(**BRANCHED), "json"),
    "latency-table": Loader(["run", "s.yaml", "--out", "out"], "t.json", _spec_with(cost=LUT), "json"),
    "coco-json": Loader(["run", "s.yaml", "--out", "out"], "a.json",
                        lambda ws, spec: (_spec_with(dataset=COCO)(ws, spec), (ws / "imgs").mkdir()), "json"),
    "resume-spec": Loader(RESUME, "out/spec.yaml", _run_dir, "yaml"),
    "resume-metrics": Loader(RESUME, "out/metrics.jsonl", _run_dir, "json"),
    "resume-checkpoint": Loader(RESUME, "out/checkpoints/search.pt", _run_dir, "binary"),
}

#: what a hostile class means for a binary file (a checkpoint): read as bytes, refused by its content
BINARY_EXPECTED = {"huge-sparse": "is not a PyTorch checkpoint (zip archive expected)",
                   "binary-garbage": "is not a PyTorch checkpoint (zip archive expected)"}


def _place(loader: Loader, ws: Path, spec: dict, content: str | bytes | Callable[[Path], None]) -> Path:
    loader.setup(ws, spec)
    path = ws / loader.file
    if os.path.lexists(path):
        path.unlink()  # a run directory's own spec.yaml, replaced by the hostile one
    write(path, content)
    return path


@pytest.mark.parametrize("hostile", list(PATH_CLASSES))
@pytest.mark.parametrize("name", list(LOADERS))
def test_not_a_readable_file(name, hostile, ws, cache_dir, capsys):
    """Symlinks that lead nowhere, directories, FIFOs, huge files, garbage, unreadable files: refused by type
    or size before they are opened, or by their bytes."""
    loader = LOADERS[name]
    make, expected = PATH_CLASSES[hostile]
    if loader.kind == "binary":
        expected = BINARY_EXPECTED.get(hostile, expected)
    _place(loader, ws, tiny_spec(cache_dir), make)
    rejected(loader.argv, ws, capsys, f"{loader.file} {expected}")


PARSER_BOMBS = {
    "yaml": {"alias-bomb": (ALIAS_BOMB, "expands to more than 100,000 values (an alias bomb?); expected at most"),
             "deep-nesting": (DEEP_YAML, "nests deeper than 100 levels; expected at most 100"),
             "recursive-alias": ("a: &a [1, *a]\n", "has an alias inside its own anchor"),
             "huge-integer": ("seed: " + "9" * 5000 + "\n", "holds a value that cannot be read: Exceeds the limit"),
             "bad-date": ("seed: 2001-13-45\n", "holds a value that cannot be read: month must be in 1..12")},
    "json": {"deep-nesting": (DEEP_JSON + "\n", "nests deeper than 100 levels; expected at most 100"),
             "nesting-past-the-limit": ("[" * 101 + "]" * 101 + "\n", "nests deeper than 100 levels"),
             "huge-integer": ("[" + "9" * 5000 + "]\n", "is not valid JSON: Exceeds the limit (4300 digits)")},
}


@pytest.mark.parametrize("name, bomb", [(n, b) for n, loader in LOADERS.items()
                                        for b in PARSER_BOMBS.get(loader.kind, ())])
def test_parser_bombs(name, bomb, ws, cache_dir, capsys):
    """Alias bombs and deep nesting are refused while parsing (no expansion, no RecursionError)."""
    loader = LOADERS[name]
    content, expected = PARSER_BOMBS[loader.kind][bomb]
    _place(loader, ws, tiny_spec(cache_dir), content)
    err = rejected(loader.argv, ws, capsys, expected)
    assert loader.file in err


# -- wrong types at every level ------------------------------------------------------------------------------
def _arch(**changes) -> str:
    return json.dumps({**FBNET_C, **changes})


def _coco(**changes) -> str:
    data = {"images": [{"id": 1, "file_name": "0.png", "width": 8, "height": 8}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}],
            "categories": [{"id": 1, "name": "x"}]}
    for key, value in changes.items():
        part, _, sub = key.partition("__")
        if sub:
            data[part][0][sub] = value
        else:
            data[part] = value
    return json.dumps(data)


def _lut(**changes) -> str:
    return json.dumps({"format": "nascore-latency-lut", "version": 1, "fingerprint": {}, **changes})


def _spec_text(**changes) -> Callable[[dict], str]:
    return lambda spec: dump({**spec, **changes})


ROW = {"phase": "search", "epoch": 0, "loss": 1.0}

#: loader -> case -> (content, or a function of the tiny spec giving it; part of the message expected)
WRONG_TYPES: dict[str, dict[str, tuple]] = {
    "spec": {
        "list-not-mapping": ("- dataset\n- tasks\n", "must hold a mapping of keys"),
        "null-document": ("null\n", "is empty; expected a mapping"),
        "string-not-number": (_spec_text(seed="zero"), "seed: Input should be a valid integer"),
        "null-list": (_spec_text(tasks=None), "tasks: Input should be a valid list"),
        "list-block": (_spec_text(dataset=[1, 2]), "dataset: expected a mapping of fields, got list"),
        "null-name": (_spec_text(space={"name": None}), "space.name: Input should be a valid string"),
        "string-option": (_spec_text(space={"name": "fbnet", "width": "wide"}),
                          "space.width: Input should be a valid number"),
        "mapping-task": (_spec_text(tasks=[{"name": {"a": 1}}]), "tasks[0].name: Input should be a valid string"),
    },
    "arch": {
        "list-not-object": ("[1, 2]", "is not a valid arch:\n  <root>: expected a mapping of fields, got list"),
        "number-space": (_arch(space=5), "space: Input should be a valid string"),
        "null-choices": (_arch(choices=None), "choices: expected a mapping of fields, got NoneType None"),
        "number-choice": (_arch(choices={**FBNET_C["choices"], "layer01": 5}),
                          "choices.layer01: Input should be a valid string"),
        "string-config": (_arch(config="wide"), "config: expected a mapping of fields, got str 'wide'"),
        "string-option": (_arch(config={"width": "wide"}), "config.width: Input should be a valid number"),
    },
    "latency-table": {
        "list": ("[]", "is not a nascore latency table"),
        "null-fingerprint": (_lut(fingerprint=None), "fingerprint: expected a mapping of fields, got NoneType"),
        "list-entries": (_lut(entries=[]), "entries: expected a mapping of fields, got list []"),
        "null-entry": (_lut(entries={"op @ 1": None}), "entries.op @ 1: expected a mapping of fields"),
        "string-timing": (_lut(entries={"op @ 1": {"median_ms": "fast", "p90_ms": 1, "runs": 1}}),
                          "entries.op @ 1.median_ms: Input should be a valid number"),
        "nan-timing": (_lut()[:-1] + ', "overhead_ms": NaN}',
                       "is not valid JSON: NaN is not a number JSON allows"),
    },
    "coco-json": {
        "list": ("[]", "is not COCO detection JSON: missing images, annotations, categories"),
        "mapping-images": (_coco(images={}), "images: Input should be a valid list"),
        "null-image": (_coco(images=[None]), "images[0]: expected a mapping of fields, got NoneType None"),
        "number-file-name": (_coco(images__file_name=7), "images[0].file_name: Input should be a valid string"),
        "string-id": (_coco(annotations__image_id="1"), "annotations[0].image_id: Input should be a valid integer"),
        "bool-category": (_coco(annotations__category_id=True),
                          "annotations[0].category_id: Input should be a valid integer"),
        "string-bbox": (_coco(annotations__bbox="0 0 4 4"), "annotations[0].bbox: Input should be a valid list"),
        "short-bbox": (_coco(annotations__bbox=[0, 0]), "annotations[0].bbox: List should have at least 4"),
        "null-segmentation": (_coco(annotations__segmentation=None), "annotations[0].segmentation"),
        "number-segmentation": (_coco(annotations__segmentation=5), "annotations[0].segmentation"),
        "short-polygon": (_coco(annotations__segmentation=[[1, 2, 3, 4]]),
                          "annotations[0].segmentation.list[list[float]][0]: List should have at least 6"),
        "far-polygon": (_coco(annotations__segmentation=[[0, 0, 1e9, 0, 1e9, 1e9]]),
                        "annotations[0].segmentation: a polygon point lies far outside the 8x8 image"),
        "rle-size": (_coco(annotations__segmentation={"size": [4, 4], "counts": [16]}),
                     "annotations[0].segmentation: the RLE mask is 4x4, its image 8x8"),
        "rle-counts": (_coco(annotations__segmentation={"size": [8, 8], "counts": [1, 2]}),
                       "the RLE counts do not add up to 8x8 pixels"),
        "rle-string": (_coco(annotations__segmentation={"size": [8, 8], "counts": "\x7f\x7f"}),
                       "the RLE counts string cannot be decoded"),
        "rle-string-short": (_coco(annotations__segmentation={"size": [8, 8], "counts": "0"}),
                             "the RLE counts do not add up to 8x8 pixels"),
        "no-image-size": (_coco(images=[{"id": 1, "file_name": "0.png"}],
                                annotations__segmentation=[[0, 0, 4, 0, 4, 4]]),
                          "annotations[0].segmentation: its image 1 has no width and height"),
        "unknown-image": (_coco(annotations__image_id=9),
                          "annotations[0].image_id: 9 is not the id of an image in images"),
        "string-category": (_coco(categories=[{"id": "1"}]), "categories[0].id: Input should be a valid integer"),
        "infinity": (_coco().replace("[0, 0, 4, 4]", "[0, 0, Infinity, 4]"),
                     "is not valid JSON: Infinity is not a number JSON allows"),
    },
    "resume-metrics": {
        "list-row": ("[1, 2]\n", 'line 1: expected a JSON object with a "phase" (text) and an "epoch" (integer)'),
        "null-row": ("null\n", "line 1: expected a JSON object"),
        "string-epoch": (json.dumps({**ROW, "epoch": "0"}) + "\n", "line 1: expected a JSON object"),
        "number-phase": (json.dumps({**ROW, "phase": 3}) + "\n", "line 1: expected a JSON object"),
        "broken-middle-line": (json.dumps(ROW) + "\nnot json\n" + json.dumps(ROW) + "\n",
                               "line 2 is not valid JSON: Expecting value"),
    },
    "resume-spec": {
        "list": ("- seed\n", "--resume: the spec differs from the one the run in out started with (out/spec.yaml)"),
        "string-seed": (_spec_text(seed="zero"), "--resume: the spec differs"),
    },
}


@pytest.mark.parametrize("name, case", [(n, c) for n, cases in WRONG_TYPES.items() for c in cases])
def test_wrong_types(name, case, ws, cache_dir, capsys):
    loader = LOADERS[name]
    content, expected = WRONG_TYPES[name][case]
    spec = tiny_spec(cache_dir)
    _place(loader, ws, spec, content(spec) if callable(content) else content)
    err = rejected(loader.argv, ws, capsys, expected)
    assert loader.file in err


# -- --set values (the command line: no file) ----------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("space.width=[" + ", ".join(_bomb("a")) + "]",
     "value expands to more than 100,000 values (an alias bomb?)"),
    ("space.width=" + "[" * 5000 + "]" * 5000, "value nests deeper than 100 levels"),
    (".".join(["space"] * 150) + "=1", "the key is 150 levels deep; expected at most 100"),
    ("tasks." + "9" * 5000 + ".x=1", "'tasks' is a list of 1; '" + "9" * 5000 + "' is not an index in it"),
    ("seed=" + "9" * 5000, "value holds a value that cannot be read: Exceeds the limit"),
    ("seed=zero", "  seed: Input should be a valid integer"),
    ("tasks=null", "  tasks: Input should be a valid list"),
    ("dataset=[1]", "  dataset: expected a mapping of fields, got list"),
    ("space.width=!!python/object/apply:os.system [echo]", ("value is not valid YAML: line 1, column 1: could not "
                                                           "determine a constructor")),
], ids=["alias-bomb", "deep-nesting", "deep-key", "huge-index", "huge-integer", "string-seed",
        "null-tasks", "list-dataset", "python-tag"])
def test_set_values(value, expected, ws, cache_dir, capsys):
    (ws / "s.yaml").write_text(dump(tiny_spec(cache_dir)))
    err = rejected(["run", "s.yaml", "--out", "out", "--set", value], ws, capsys, expected)
    assert "--set" in err or "s.yaml" in err


# -- checkpoints: their content -------------------------------------------------------------------------------
class Foreign:
    """Not a tensor nor plain data: weights_only refuses to build it."""


def _real_checkpoint(path: Path) -> bytes:
    torch.save({"epoch": 0, "state": {"w": torch.zeros(64)}}, path)
    return path.read_bytes()


def _truncated(path: Path) -> None:
    data = _real_checkpoint(path)
    path.write_bytes(data[: len(data) // 2])


def _corrupt_pickle(path: Path) -> None:
    _real_checkpoint(path)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in entries if n.endswith("data.pkl"))
    entries[pkl] = random.Random(1).randbytes(len(entries[pkl]))
    with zipfile.ZipFile(path, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)


def _zip(compression: int, names: tuple[str, ...]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with zipfile.ZipFile(path, "w", compression=compression) as z:
            for n in names:
                z.writestr(n, b"\0" * 100_000)
    return make


CHECKPOINT_CONTENTS = {
    "empty": (lambda p: p.write_bytes(b""), "is empty; expected a PyTorch checkpoint"),
    "text": (lambda p: p.write_text("this is not a checkpoint"), "is not a PyTorch checkpoint (zip archive expected)"),
    "legacy-pickle": (lambda p: torch.save({"epoch": 0}, p, _use_new_zipfile_serialization=False),
                      "is not a PyTorch checkpoint (zip archive expected)"),
    "truncated": (_truncated, "is truncated or corrupt (its zip archive is incomplete)"),
    "corrupt-pickle": (_corrupt_pickle, "is truncated or corrupt (torch cannot read it as a checkpoint)"),
    "other-zip": (_zip(zipfile.ZIP_STORED, ("notes.txt",)), ("is truncated or corrupt (torch cannot read it as a "
                                                             "checkpoint)")),
    "compressed-zip": (_zip(zipfile.ZIP_DEFLATED, ("archive/data.pkl",)), ("holds compressed entries; expected a "
                                                                           "checkpoint as torch.save writes it")),
    "foreign-objects": (lambda p: torch.save({"epoch": 0, "state": Foreign()}, p),
                        ("holds objects other than tensors and plain data (test_hostile_inputs.Foreign); expected "
                        "a nascore checkpoint")),
    "not-a-dict": (lambda p: torch.save([1, 2], p), "holds a list, expected a dict"),
    "expanded-tensor": (lambda p: torch.save({"epoch": 0, "state": [{"w": torch.zeros(1).expand(10**12)}]}, p),
                        "holds a tensor of 1,000,000,000,000 values stored in 1; expected tensors that hold their "
                        "values"),
}


@pytest.mark.parametrize("content", list(CHECKPOINT_CONTENTS))
def test_checkpoint_content(content, tmp_path):
    make, expected = CHECKPOINT_CONTENTS[content]
    path = tmp_path / "search.pt"
    make(path)
    before = path.read_bytes()
    with pytest.raises(NascoreError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"checkpoint {path} ") and expected in message, message
    assert not any(advice in message for advice in TORCH_ADVICE), message
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", ["truncated", "foreign-objects", "corrupt-pickle"])
def test_checkpoint_content_on_resume(content, ws, cache_dir, capsys):
    make, expected = CHECKPOINT_CONTENTS[content]
    _place(LOADERS["resume-checkpoint"], ws, tiny_spec(cache_dir), make)
    err = rejected(RESUME, ws, capsys, f"out/checkpoints/search.pt {expected}")
    assert not any(advice in err for advice in TORCH_ADVICE), err


# -- images of the datasets ----------------------------------------------------------------------------------
def _png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb when large)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))


def _image(path: Path, size: int = 8, mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size)).save(path)


#: content classes of an image, refused when it is read: (make, expected)
IMAGE_CONTENTS = {
    "binary-garbage": (_garbage, "cannot read {what} {path}: not an image file (PNG, JPEG, ... expected)"),
    "truncated": (lambda p: (_image(p), p.write_bytes(p.read_bytes()[:40])), "cannot read {what} {path}: "),
    "decompression-bomb": (lambda p: p.write_bytes(_png(60_000, 60_000)), "{what} {path} has too many pixels"),
}
HUGE_IMAGE = (_huge, "is 3.0 GiB; expected at most 256.0 MiB")
#: classes a dataset refuses when it lists its files, before any image is read
IMAGE_PATHS = {**{k: PATH_CLASSES[k] for k in ("dangling-symlink", "symlink-loop", "directory", "fifo")},
               "huge-sparse": HUGE_IMAGE}


def _coco_dataset(root: Path, image: Callable[[Path], None]):
    from nascore.tasks.datasets import COCODetection

    (root / "a.json").write_text(_coco())
    (root / "imgs").mkdir()
    image(root / "imgs" / "0.png")
    return COCODetection({"train_json": root / "a.json", "train_images": root / "imgs",
                          "val_json": root / "a.json", "val_images": root / "imgs", "image_size": 16})


@pytest.mark.parametrize("hostile", [*IMAGE_CONTENTS, "huge-sparse"])
def test_coco_image_content(hostile, tmp_path):
    """The coco dataset's images are read when a batch is drawn (validation checks that they are files)."""
    make, expected = IMAGE_CONTENTS.get(hostile) or (HUGE_IMAGE[0], "{what} {path} " + HUGE_IMAGE[1])
    split = _coco_dataset(tmp_path, make).split("train")
    with pytest.raises(NascoreError, match="^dataset coco: ") as err:
        split[0]
    assert expected.format(what="image", path=tmp_path / "imgs" / "0.png") in str(err.value)


@pytest.mark.parametrize("hostile", ["dangling-symlink", "symlink-loop", "directory", "fifo"])
def test_coco_image_not_a_file(hostile, ws, cache_dir, capsys):
    spec = tiny_spec(cache_dir)
    (ws / "s.yaml").write_text(dump({**spec, "dataset": COCO}))
    (ws / "a.json").write_text(_coco())
    (ws / "imgs").mkdir()
    IMAGE_PATHS[hostile][0](ws / "imgs" / "0.png")
    rejected(["run", "s.yaml", "--out", "out"], ws, capsys, "  dataset: train_json: 1 images of a.json are not in "
                                                             "imgs, e.g. 0.png")


def test_coco_image_of_another_size(tmp_path):
    split = _coco_dataset(tmp_path, lambda p: _image(p, 12)).split("train")
    split.has_masks = True
    with pytest.raises(NascoreError, match=r"image .*0.png is 12x12; its annotations say 8x8"):
        split[0]


def _image_folder(root: Path, hostile: Callable[[Path], None]):
    from nascore.tasks.datasets import ImageFolder

    for split in ("train", "val"):
        _image(root / split / "cat" / "a.png")
    hostile(root / "train" / "cat" / "b.png")
    return ImageFolder({"root": root, "image_size": 16})


@pytest.mark.parametrize("hostile", [k for k in IMAGE_PATHS if k != "directory"])  # a folder: walked for images
def test_image_folder_not_a_file(hostile, tmp_path):
    data = _image_folder(tmp_path, IMAGE_PATHS[hostile][0])
    with pytest.raises(NascoreError) as err:
        data.split("train")
    assert str(err.value).startswith(f"dataset image-folder: image {tmp_path / 'train' / 'cat' / 'b.png'} "
                                     f"{IMAGE_PATHS[hostile][1]}")


@pytest.mark.parametrize("hostile", list(IMAGE_CONTENTS))
def test_image_folder_content(hostile, tmp_path):
    make, expected = IMAGE_CONTENTS[hostile]
    split = _image_folder(tmp_path, make).split("train")
    with pytest.raises(NascoreError, match="^dataset image-folder: ") as err:
        split[1]
    assert expected.format(what="image", path=tmp_path / "train" / "cat" / "b.png") in str(err.value)


def _mask_folder(root: Path, which: str, hostile: Callable[[Path], None]) -> None:
    for split in ("train", "val"):
        _image(root / split / "images" / "a.png")
        _image(root / split / "masks" / "a.png", mode="L")
    target = root / "train" / which / "a.png"
    target.unlink()
    hostile(target)


@pytest.mark.parametrize("which", ["images", "masks"])
@pytest.mark.parametrize("hostile", list(IMAGE_PATHS))
def test_mask_folder_not_a_file(hostile, which, ws, cache_dir, capsys):
    pytest.importorskip("nascore_segmentation")
    _mask_folder(ws / "data", which, IMAGE_PATHS[hostile][0])
    spec = {**tiny_spec(cache_dir), "dataset": {"name": "mask-folder", "root": "data", "num_classes": 3},
            "tasks": [{"name": "semantic-segmentation"}]}
    (ws / "s.yaml").write_text(dump(spec))
    rejected(["run", "s.yaml", "--out", "out"], ws, capsys,
             f"  dataset: {which[:-1]} data/train/{which}/a.png {IMAGE_PATHS[hostile][1]}")


@pytest.mark.parametrize("which", ["images", "masks"])
@pytest.mark.parametrize("hostile", list(IMAGE_CONTENTS))
def test_mask_folder_content(hostile, which, tmp_path):
    pytest.importorskip("nascore_segmentation")
    from nascore_segmentation import MaskFolder

    make, expected = IMAGE_CONTENTS[hostile]
    _mask_folder(tmp_path, which, make)
    split = MaskFolder({"root": tmp_path, "num_classes": 3, "image_size": 16}).split("train")
    with pytest.raises(NascoreError, match="^dataset mask-folder: ") as err:
        split[0]
    assert expected.format(what=which[:-1], path=tmp_path / "train" / which / "a.png") in str(err.value)


# -- the shared reader itself ----------------------------------------------------------------------------------
def test_unreadable_file_is_named(tmp_path, monkeypatch):
    """Permission denied (as root a chmod 000 file is still readable, so the refusal is simulated)."""
    path = tmp_path / "s.yaml"
    path.write_text("seed: 0\n")

    real_open = os.open

    def denied(name, *args, **kwargs):
        if Path(name) == path:
            raise PermissionError(13, "Permission denied")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(NascoreError, match=f"^spec file {path} cannot be read: Permission denied$"):
        fileio.load_user_yaml(path, "spec file")


def test_the_cap_holds_for_what_is_read(tmp_path, monkeypatch):
    """Not only for the size stat reported before (a file that grows in between)."""
    path = tmp_path / "a.json"
    path.write_text("[" + "1, " * 100 + "1]")
    monkeypatch.setattr(fileio, "check_user_file", lambda *args: None)
    with pytest.raises(NascoreError, match=r"is larger than 64 bytes; expected at most that"):
        fileio.load_user_json(path, "arch file", 64)
    assert fileio.load_user_json(path, "arch file", 1024) == [1] * 101


@pytest.mark.parametrize("text, expected", [
    ("a: &x [1, 2]\nb: *x\nc: {<<: {d: 1}}\n", {"a": [1, 2], "b": [1, 2], "c": {"d": 1}}),
    ("[" * 100 + "]" * 100, json.loads("[" * 100 + "]" * 100)),
])
def test_plain_yaml_within_the_limits_loads(text, expected):
    assert fileio.parse_user_yaml(text, "x") == expected


def test_metrics_line_cut_by_a_kill_is_dropped(tmp_path):
    """Only an unterminated last line may be broken: a run killed while appending a row resumes."""
    from nascore.rundir import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "epoch": 1})[:10])
    assert read_metrics(path) == [ROW]


# -- what still works ---------------------------------------------------------------------------------------
def test_symlinks_to_files_and_plain_aliases_are_fine(ws, cache_dir, capsys):
    """A symlink to a regular file is read as that file; a spec with an anchor and an alias is a spec."""
    (ws / "real").mkdir()
    text = dump(tiny_spec(cache_dir)).replace("seed: 0\n", "seed: &zero 0\n") + "pareto: {samples: *zero}\n"
    (ws / "real" / "s.yaml").write_text(text)
    (ws / "real" / "a.json").write_text(json.dumps(FBNET_C))
    os.symlink("real/s.yaml", ws / "s.yaml")
    os.symlink("real/a.json", ws / "a.json")
    assert main(["validate", "s.yaml"]) == 0
    assert main(["info", "a.json"]) == 0
    capsys.readouterr()


# -- the real command: no hang, no traceback -----------------------------------------------------------------
@pytest.mark.parametrize("name, content", [("alias-bomb", ALIAS_BOMB), ("deep-nesting", DEEP_YAML),
                                           ("fifo", None)])
def test_real_command_neither_hangs_nor_crashes(name, content, ws):
    path = ws / "s.yaml"
    if content is None:
        os.mkfifo(path)
    else:
        path.write_text(content)
    before = snapshot(ws)
    script = Path(sys.executable).with_name("nascore")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "nascore.cli"]
    proc = subprocess.run([*command, "run", "s.yaml", "--out", "out"], capture_output=True, text=True, cwd=ws,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120, check=False)  # a hang fails here
    check_rejected(proc.returncode, proc.stdout, proc.stderr, "error: spec file s.yaml ")
    assert snapshot(ws) == before

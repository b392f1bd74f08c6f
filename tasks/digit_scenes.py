"""digit-scenes: a small multitask proxy dataset built from scikit-learn's digit scans.

Each RGB image holds 1-3 real handwritten digits (``sklearn.datasets.load_digits``, 8x8
scans) at random scales and places on a textured background, with labels for
classification, detection, semantic segmentation, saliency and edges. Generation is
deterministic in ``SceneConfig.seed``; the train/val/test splits draw from disjoint scans.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from uuid import uuid4

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SPLITS = ("train", "val", "test")
NUM_CLASSES = 10  # classification / detection classes (digits 0-9)
NUM_SEG_CLASSES = 11  # semantic classes: background 0, digit d -> d + 1

# Per-channel normalisation constants (measured on the default train split, then fixed).
MEAN = (0.5, 0.5, 0.5)
STD = (0.27, 0.27, 0.27)

_FORMAT_VERSION = 1  # bump whenever generation changes: it is part of the cache key
_SCAN_SPLIT_SEED = 1797  # fixed, so a split's source scans never depend on cfg.seed
_SCAN_FRACTIONS = (0.70, 0.15)  # train, val; test gets the rest
_PLACE_TRIES = 10
_MAX_IOU = 0.3
_MAX_COVER = 0.5  # also cap intersection / smaller box, so a small digit never hides inside a big one
_BOX_ALPHA = 0.25  # box = tight box of alpha > this
_FG_ALPHA = 0.5  # semantic / saliency foreground = alpha > this
_CHUNK_PIXELS = 1 << 22  # backgrounds are rendered in chunks of about this many pixels
#: what a split holds per pixel (image 3, semantic, saliency and edges 1 each, uint8), and the most a split may hold
BYTES_PER_PIXEL, MAX_SPLIT_BYTES = 6, 16 << 30
_RAGGED = ("boxes", "classes", "sources")  # per-instance lists, stored flattened


@dataclass(frozen=True)
class SceneConfig:
    image_size: int = 64
    num_train: int = 2000
    num_val: int = 400
    num_test: int = 400
    min_digits: int = 1
    max_digits: int = 3
    min_scale: float = 0.25  # digit side as a fraction of the image side
    max_scale: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}")
        if min(self.num_train, self.num_val, self.num_test) < 0:
            raise ValueError("split sizes must be >= 0")


def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return SPLITS.index(split)


@lru_cache(maxsize=1)
def _scans() -> tuple[np.ndarray, np.ndarray]:
    """All digit scans as float32 alpha in [0, 1], shape [1797, 8, 8], and their classes."""
    from sklearn.datasets import load_digits  # scikit-learn: only when the digit scans are first loaded

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def source_indices(split: str) -> np.ndarray:
    """Sorted indices into ``load_digits()`` of the scans that ``split`` draws from (disjoint across splits)."""
    k = _check_split(split)
    n = len(_scans()[1])
    perm = np.random.default_rng(_SCAN_SPLIT_SEED).permutation(n)
    cuts = np.cumsum([round(f * n) for f in _SCAN_FRACTIONS])
    return np.sort(np.split(perm, cuts)[k])


def _background_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    light = rng.random(n) < 0.5
    lo = np.where(light, 0.55, 0.0)[:, None]  # colour band: [0, .45] dark or [.55, 1] light
    u = rng.random((n, 3))
    shift = 0.35 + 0.3 * rng.random((n, 3))  # second colour differs by >= 0.16 per channel
    params = {
        "c0": lo + 0.45 * u,
        "c1": lo + 0.45 * ((u + shift) % 1.0),
        "coarse": rng.random((n, 1, 4, 4)),
        "fine": rng.random((n, 1, 12, 12)),
        "mix": rng.dirichlet((1.0, 1.0, 1.0), n),  # weights of noise / stripes / gradient
        "angle": rng.uniform(0, 2 * np.pi, (n, 2)),  # stripe and gradient directions
        "freq": rng.uniform(2, 6, n),  # stripe cycles per image side
        "phase": rng.uniform(0, 2 * np.pi, n),
    }
    return {"light": light} | {k: v.astype(np.float32) for k, v in params.items()}


def _render_backgrounds(p: dict[str, np.ndarray], s: int) -> np.ndarray:
    """Textured backgrounds, float32 [n, s, s, 3] in [0, 1]: two colours mixed by smooth noise + stripes + gradient."""

    def up(grid: np.ndarray) -> np.ndarray:
        return F.interpolate(torch.from_numpy(grid), size=(s, s), mode="bilinear", align_corners=True)[:, 0].numpy()

    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s

    def project(angle: np.ndarray) -> np.ndarray:  # [n] -> [n, s, s] coordinate along a direction
        return np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy

    noise = 0.7 * up(p["coarse"]) + 0.3 * up(p["fine"])
    wave = 2 * np.pi * p["freq"][:, None, None] * project(p["angle"][:, 0]) + p["phase"][:, None, None]
    stripes = 0.5 + 0.5 * np.sin(wave)
    grad = project(p["angle"][:, 1])
    grad -= grad.min(axis=(1, 2), keepdims=True)
    grad /= grad.max(axis=(1, 2), keepdims=True) + 1e-6
    w = p["mix"][:, :, None, None]
    t = (w[:, 0] * noise + w[:, 1] * stripes + w[:, 2] * grad)[..., None]
    c0, c1 = p["c0"][:, None, None, :], p["c1"][:, None, None, :]
    return c0 + (c1 - c0) * t


def _overlap_ok(a: np.ndarray, b: np.ndarray) -> bool:
    """Boxes (xyxy) overlap little: IoU < _MAX_IOU and intersection < _MAX_COVER of the smaller box."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return inter < _MAX_IOU * (area_a + area_b - inter) and inter < _MAX_COVER * min(area_a, area_b)


def _edges(semantic: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class (both sides of a boundary), uint8 0/1."""
    e = np.zeros(semantic.shape, dtype=bool)
    dx = semantic[..., :, 1:] != semantic[..., :, :-1]
    dy = semantic[..., 1:, :] != semantic[..., :-1, :]
    e[..., :, 1:] |= dx
    e[..., :, :-1] |= dx
    e[..., 1:, :] |= dy
    e[..., :-1, :] |= dy
    return e.astype(np.uint8)


def _num_images(cfg: SceneConfig, split: str) -> int:
    return (cfg.num_train, cfg.num_val, cfg.num_test)[_check_split(split)]


def generate_split(cfg: SceneConfig, split: str) -> dict[str, np.ndarray | list]:
    """Render one split. Each image asks for min_digits..max_digits digits; a digit that finds no
    free enough place in a few tries is dropped (the first always fits).

    Returns images uint8 [N,H,W,3]; label int64 [N]; semantic, saliency, edges uint8 [N,H,W];
    and per image lists of boxes float32 [k,4] (xyxy pixels, x2/y2 exclusive), classes int64 [k]
    and sources int64 [k] (index of each instance's scan in ``load_digits()``).
    """
    n, s = _num_images(cfg, split), cfg.image_size
    rng = np.random.default_rng([cfg.seed, _check_split(split)])
    glyphs, targets = _scans()
    pool = source_indices(split)
    params = _background_params(rng, n)
    lo_side = max(8, round(cfg.min_scale * s))  # below 8 px some scans have no alpha > 0.5
    hi_side = max(lo_side, round(cfg.max_scale * s))

    images = np.empty((n, s, s, 3), dtype=np.uint8)
    semantic = np.zeros((n, s, s), dtype=np.uint8)
    labels = np.zeros(n, dtype=np.int64)
    boxes: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    sources: list[np.ndarray] = []
    chunk = max(1, _CHUNK_PIXELS // (s * s))
    for start in range(0, n, chunk):
        canvas = _render_backgrounds({k: v[start : start + chunk] for k, v in params.items()}, s)
        for j, img in enumerate(canvas):
            i = start + j
            img_boxes: list[np.ndarray] = []
            img_src: list[int] = []
            for _ in range(rng.integers(cfg.min_digits, cfg.max_digits + 1)):
                src = int(rng.choice(pool))
                side = int(rng.integers(lo_side, hi_side + 1))
                glyph = torch.from_numpy(glyphs[src])[None, None]
                alpha = F.interpolate(glyph, size=(side, side), mode="bilinear", align_corners=False)[0, 0].numpy()
                fg = alpha > _FG_ALPHA  # non-empty for every scan at side >= 8
                ys, xs = np.nonzero(alpha > _BOX_ALPHA)
                local = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
                # Try a few positions whose box overlaps earlier ones little; else drop the digit.
                for _ in range(_PLACE_TRIES):
                    x0, y0 = (int(v) for v in rng.integers(0, s - side + 1, 2))
                    box = local + np.array([x0, y0, x0, y0], dtype=np.float32)
                    if all(_overlap_ok(box, b) for b in img_boxes):
                        break
                else:
                    continue
                band = rng.random(3)  # digit colour from the band opposite the background's
                colour = (0.35 * band if params["light"][i] else 0.65 + 0.35 * band).astype(np.float32)
                a = alpha[:, :, None]
                patch = img[y0 : y0 + side, x0 : x0 + side]
                patch *= 1 - a
                patch += a * colour
                semantic[i, y0 : y0 + side, x0 : x0 + side][fg] = targets[src] + 1
                img_boxes.append(box)
                img_src.append(src)
            b = np.stack(img_boxes)
            src_arr = np.array(img_src, dtype=np.int64)
            boxes.append(b)
            sources.append(src_arr)
            classes.append(targets[src_arr])
            labels[i] = classes[-1][np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))]
        images[start : start + chunk] = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
    return {
        "images": images,
        "label": labels,
        "semantic": semantic,
        "saliency": (semantic > 0).astype(np.uint8),
        "edges": _edges(semantic),
        "boxes": boxes,
        "classes": classes,
        "sources": sources,
    }


def default_cache_dir() -> Path:
    return Path(os.environ.get("NASCORE_CACHE") or Path.home() / ".cache" / "nascore")


def cache_path(cfg: SceneConfig, split: str, cache_dir: str | Path | None = None) -> Path:
    """Where ``load_split`` caches a split: the name holds a hash of the config, split and format version."""
    _check_split(split)
    key = json.dumps({"cfg": asdict(cfg), "split": split, "version": _FORMAT_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"digit_scenes_{split}_{digest}.npz"


def _save(path: Path, data: dict) -> None:
    arrays = {k: v for k, v in data.items() if k not in _RAGGED}
    counts = [len(c) for c in data["classes"]]
    arrays["offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    arrays["boxes"] = np.concatenate(data["boxes"]) if counts else np.zeros((0, 4), np.float32)
    for k in ("classes", "sources"):
        arrays[k] = np.concatenate(data[k]) if counts else np.zeros(0, np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid4().hex}.tmp")  # plain open (not mkstemp) keeps the umask's mode
    try:
        with open(tmp, "xb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load(path: Path, n: int) -> dict:
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    off = data.pop("offsets")
    if len(data["images"]) != n or len(off) != n + 1:
        raise ValueError(f"{path} holds {len(data['images'])} images, expected {n}")
    for k in _RAGGED:
        flat = data[k]
        data[k] = [flat[a:b] for a, b in zip(off[:-1], off[1:])]
    return data


def load_split(cfg: SceneConfig, split: str, cache_dir: str | Path | None = None) -> dict:
    """``generate_split``, cached as a compressed .npz (see ``cache_path``); a corrupt cache is regenerated."""
    path = cache_path(cfg, split, cache_dir)
    if path.is_file():  # not exists(): np.load of a FIFO would block forever
        try:
            return _load(path, _num_images(cfg, split))
        except Exception:  # corrupt (bad zip, bad zlib stream, missing keys) or stale: regenerate below
            pass
    data = generate_split(cfg, split)
    _save(path, data)
    return data


class SceneSplit(torch.utils.data.Dataset):
    """One split of digit-scenes as (normalised image [3,H,W], targets dict of tensors)."""

    def __init__(self, cfg: SceneConfig, split: str, cache_dir: str | Path | None = None) -> None:
        self.cfg, self.split = cfg, split
        data = load_split(cfg, split, cache_dir)
        self.images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2)  # uint8 [N,3,H,W]
        self.label = torch.from_numpy(data["label"])
        self.semantic = torch.from_numpy(data["semantic"])
        self.saliency = torch.from_numpy(data["saliency"])
        self.edges = torch.from_numpy(data["edges"])
        self.boxes = [torch.from_numpy(b) for b in data["boxes"]]
        self.classes = [torch.from_numpy(c) for c in data["classes"]]
        self._mean = torch.tensor(MEAN).view(3, 1, 1)
        self._std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = (self.images[i].float() / 255 - self._mean) / self._std
        return image, {
            "label": self.label[i],
            "boxes": self.boxes[i],
            "classes": self.classes[i],
            "semantic": self.semantic[i].long(),
            "saliency": self.saliency[i].float(),
            "edges": self.edges[i].float(),
        }


_Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]


def collate(batch: list[_Sample]) -> tuple[torch.Tensor, dict[str, torch.Tensor | list[torch.Tensor]]]:
    """Stack images and fixed-shape targets; ``boxes`` and ``classes`` stay lists of tensors."""
    images = torch.stack([img for img, _ in batch])
    keys = batch[0][1].keys()
    targets = {
        k: [t[k] for _, t in batch] if k in ("boxes", "classes") else torch.stack([t[k] for _, t in batch])
        for k in keys
    }
    return images, targets


def instance_mask(semantic: np.ndarray, box: list[float], cls: int) -> np.ndarray:
    """An instance's mask: the pixels of its class in the semantic map (digit ``c`` is ``c + 1``) inside its
    box (digits overlap little: IoU <= 0.3), as uint8 (H, W)."""
    x1, y1, x2, y2 = (int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3])))
    mask = np.zeros(semantic.shape, dtype=np.uint8)
    mask[y1:y2, x1:x2] = semantic[y1:y2, x1:x2] == cls + 1
    return mask


def _coco_json(data: dict, size: int) -> dict:
    from pycocotools import mask as mask_util  # pycocotools: only when masks are encoded

    images, annotations = [], []
    for i, (boxes, classes) in enumerate(zip(data["boxes"], data["classes"])):
        images.append({"id": i, "file_name": f"{i:06d}.png", "width": size, "height": size})
        semantic = np.asarray(data["semantic"][i])
        for (x1, y1, x2, y2), c in zip(boxes.tolist(), classes.tolist()):
            w, h = x2 - x1, y2 - y1
            rle = mask_util.encode(np.asfortranarray(instance_mask(semantic, [x1, y1, x2, y2], c)))
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i, "category_id": c + 1,
                 "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0,
                 "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}
            )
    categories = [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(NUM_CLASSES)]
    info = {"description": "digit-scenes", "version": str(_FORMAT_VERSION)}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def export_coco(cfg: SceneConfig, out_dir: str | Path, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Write every split as COCO JSON (boxes, instance masks as RLE) + PNG images + PNG semantic masks under
    ``out_dir``.

    Layout: ``<split>/images/000000.png``, ``<split>/masks/000000.png`` (semantic ids, 8-bit) and
    ``annotations/instances_<split>.json``. Everything is written to a temporary sibling directory
    that is renamed at the end, so a failure leaves nothing behind. Returns split -> annotation path.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"refusing to export digit-scenes into non-empty directory {out_dir}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid4().hex}"
    try:
        (tmp / "annotations").mkdir(parents=True)
        for split in SPLITS:
            data = load_split(cfg, split, cache_dir)
            for sub, arrays in (("images", data["images"]), ("masks", data["semantic"])):
                (tmp / split / sub).mkdir(parents=True)
                for i, a in enumerate(arrays):
                    Image.fromarray(a).save(tmp / split / sub / f"{i:06d}.png")
            with open(tmp / "annotations" / f"instances_{split}.json", "w") as f:
                json.dump(_coco_json(data, cfg.image_size), f)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {split: out_dir / "annotations" / f"instances_{split}.json" for split in SPLITS}

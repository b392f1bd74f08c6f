import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from nascore.tasks import digit_scenes as ds
from nascore.tasks.digit_scenes import (
    MEAN,
    NUM_SEG_CLASSES,
    SPLITS,
    STD,
    SceneConfig,
    SceneSplit,
    cache_path,
    collate,
    export_coco,
    generate_split,
    load_split,
    source_indices,
)

CFG = SceneConfig(num_train=40, num_val=12, num_test=12, seed=3)


@pytest.fixture(scope="module")
def data():
    return generate_split(CFG, "train")


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], list):
            assert len(a[k]) == len(b[k]) and all(np.array_equal(x, y) for x, y in zip(a[k], b[k])), k
        else:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_shapes_and_dtypes(data):
    n, s = CFG.num_train, CFG.image_size
    assert data["images"].shape == (n, s, s, 3) and data["images"].dtype == np.uint8
    assert data["label"].shape == (n,) and data["label"].dtype == np.int64
    for k in ("semantic", "saliency", "edges"):
        assert data[k].shape == (n, s, s) and data[k].dtype == np.uint8
    for b, c in zip(data["boxes"], data["classes"]):
        assert b.dtype == np.float32 and c.dtype == np.int64
        assert b.shape == (len(c), 4) and CFG.min_digits <= len(c) <= CFG.max_digits


def test_deterministic(data):
    _assert_same(data, generate_split(CFG, "train"))
    other = generate_split(SceneConfig(num_train=40, seed=4), "train")
    assert not np.array_equal(data["images"], other["images"])


def test_background_is_textured(data):
    # Background pixels vary within each image (not a flat fill).
    for img, sal in zip(data["images"], data["saliency"]):
        assert img[sal == 0].std(axis=0).max() > 5


def test_splits_use_disjoint_scans():
    pools = [set(source_indices(s).tolist()) for s in SPLITS]
    assert all(not (pools[i] & pools[j]) for i in range(3) for j in range(i + 1, 3))
    assert set.union(*pools) == set(range(1797))
    assert abs(len(pools[0]) - 0.7 * 1797) <= 1
    targets = load_digits().target
    for split, pool in zip(SPLITS, pools):
        d = generate_split(CFG, split)
        for src, cls in zip(d["sources"], d["classes"]):
            assert set(src.tolist()) <= pool
            np.testing.assert_array_equal(cls, targets[src])


def test_label_is_largest_digit(data):
    for label, boxes, classes in zip(data["label"], data["boxes"], data["classes"]):
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert label == classes[np.argmax(area)]


def _matches_rendering(scan: np.ndarray, box: np.ndarray, fg: np.ndarray) -> bool:
    """Some digit side exists whose alpha > 0.25 tight box is ``box`` and whose alpha > 0.5 is ``fg``."""
    x1, y1, x2, y2 = box
    size = fg.shape[0]
    for side in range(max(x2 - x1, y2 - y1), size + 1):
        alpha = torch.nn.functional.interpolate(
            torch.from_numpy(scan / 16.0).float()[None, None], size=(side, side), mode="bilinear", align_corners=False
        )[0, 0].numpy()
        ys, xs = np.nonzero(alpha > 0.25)
        x0, y0 = x1 - xs.min(), y1 - ys.min()
        if (xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) != (x2 - x1, y2 - y1) or min(x0, y0) < 0:
            continue
        if x0 + side > size or y0 + side > size:
            continue
        mask = np.zeros_like(fg)
        mask[y0 : y0 + side, x0 : x0 + side] = alpha > 0.5
        if np.array_equal(mask, fg):
            return True
    return False


def test_boxes_tight_around_foreground(data):
    scans = load_digits().images
    checked = 0
    for sem, boxes, classes, sources in zip(data["semantic"], data["boxes"], data["classes"], data["sources"]):
        b = boxes.astype(int)
        np.testing.assert_array_equal(b, boxes)  # integer pixel edges
        assert ((0 <= b[:, :2]) & (b[:, :2] < b[:, 2:]) & (b[:, 2:] <= CFG.image_size)).all()
        disjoint = all(
            min(b[i, 2], b[j, 2]) <= max(b[i, 0], b[j, 0]) or min(b[i, 3], b[j, 3]) <= max(b[i, 1], b[j, 1])
            for i in range(len(b)) for j in range(i + 1, len(b))
        )
        if not disjoint:
            continue
        for box, c, src in zip(b, classes, sources):
            x1, y1, x2, y2 = box
            inside = np.zeros_like(sem, dtype=bool)
            inside[y1:y2, x1:x2] = True
            fg = (sem == c + 1) & inside  # this instance's foreground (boxes are disjoint)
            ys, xs = np.nonzero(fg)
            # Box = alpha > 0.25, foreground = alpha > 0.5: the box holds the mask with a small margin.
            slack = [xs.min() - x1, ys.min() - y1, x2 - 1 - xs.max(), y2 - 1 - ys.max()]
            assert min(slack) >= 0 and max(slack) <= 0.25 * max(x2 - x1, y2 - y1) + 1, slack
            # and it is exactly the tight box: re-rendering the scan to fit the box reproduces the mask
            assert _matches_rendering(scans[src], box, fg)
            checked += 1
        # every foreground pixel of the image lies in a box of its class
        for c in np.unique(sem[sem > 0]):
            in_boxes = sum(int((sem[y1:y2, x1:x2] == c).sum()) for (x1, y1, x2, y2), k in zip(b, classes) if k + 1 == c)
            assert in_boxes == int((sem == c).sum())
    assert checked >= 20


def test_semantic_and_saliency(data):
    sem = data["semantic"]
    assert sem.max() < NUM_SEG_CLASSES and sem.max() > 0
    np.testing.assert_array_equal(data["saliency"], (sem > 0).astype(np.uint8))
    for s, classes in zip(sem, data["classes"]):
        assert set(np.unique(s[s > 0]).tolist()) <= set((classes + 1).tolist())


def test_edges_on_class_boundaries(data):
    sem = data["semantic"].astype(int)
    p = np.pad(sem, ((0, 0), (1, 1), (1, 1)), mode="edge")
    boundary = np.zeros(sem.shape, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        boundary |= p[:, dy : dy + sem.shape[1], dx : dx + sem.shape[2]] != sem
    edges = data["edges"]
    assert set(np.unique(edges).tolist()) == {0, 1}
    assert all(e.sum() > 0 for e in edges)
    np.testing.assert_array_equal(edges.astype(bool), boundary)


def test_cache_round_trip(tmp_path, monkeypatch):
    first = load_split(CFG, "val", tmp_path)
    path = cache_path(CFG, "val", tmp_path)
    assert path.is_file() and list(tmp_path.iterdir()) == [path]
    assert path.name != cache_path(CFG, "test", tmp_path).name
    assert path.name != cache_path(SceneConfig(num_val=12, seed=4), "val", tmp_path).name

    def boom(*args):
        raise AssertionError("cache was not used")

    monkeypatch.setattr(ds, "generate_split", boom)
    _assert_same(first, load_split(CFG, "val", tmp_path))


@pytest.mark.parametrize("corruption", ["garbage", "truncated"])
def test_corrupt_cache_is_regenerated(tmp_path, corruption):
    good = load_split(CFG, "test", tmp_path)
    path = cache_path(CFG, "test", tmp_path)
    raw = path.read_bytes()
    path.write_bytes(b"not a zip file" if corruption == "garbage" else raw[: len(raw) // 2])
    _assert_same(good, load_split(CFG, "test", tmp_path))
    assert path.read_bytes() == raw  # rewritten with valid content
    assert list(tmp_path.iterdir()) == [path]  # no temp files left


def test_dataset_and_collate(tmp_path):
    dataset = SceneSplit(CFG, "val", cache_dir=tmp_path)
    raw = load_split(CFG, "val", tmp_path)
    assert len(dataset) == CFG.num_val
    image, t = dataset[0]
    s = CFG.image_size
    assert image.shape == (3, s, s) and image.dtype == torch.float32
    restored = image * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    torch.testing.assert_close(restored, torch.from_numpy(raw["images"][0]).permute(2, 0, 1).float() / 255)
    assert t["semantic"].dtype == torch.int64 and t["saliency"].dtype == torch.float32
    assert t["edges"].dtype == torch.float32 and t["label"].dtype == torch.int64

    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=collate)
    images, targets = next(iter(loader))
    assert images.shape == (5, 3, s, s)
    assert targets["label"].shape == (5,)
    for k in ("semantic", "saliency", "edges"):
        assert targets[k].shape == (5, s, s)
    assert isinstance(targets["boxes"], list) and len(targets["boxes"]) == 5
    assert all(b.shape == (len(c), 4) for b, c in zip(targets["boxes"], targets["classes"]))


def test_export_coco(tmp_path):
    out = tmp_path / "coco"
    out.mkdir()  # an existing empty directory is fine
    paths = export_coco(CFG, out, cache_dir=tmp_path / "cache")
    assert set(paths) == set(SPLITS)
    for split, path in paths.items():
        assert path == out / "annotations" / f"instances_{split}.json"
        coco = json.loads(path.read_text())
        assert {"images", "annotations", "categories"} <= coco.keys()
        assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
        assert [c["name"] for c in coco["categories"]] == [str(d) for d in range(10)]
        data = load_split(CFG, split, tmp_path / "cache")
        images = {im["id"]: im for im in coco["images"]}
        assert len(images) == len(data["label"])
        ann_ids = [a["id"] for a in coco["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids) == sum(len(c) for c in data["classes"])
        for a in coco["annotations"]:
            im = images[a["image_id"]]
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= im["width"] and y + h <= im["height"]
            assert a["area"] == pytest.approx(w * h) and a["iscrowd"] == 0 and 1 <= a["category_id"] <= 10
        for i, im in images.items():
            mask = np.array(Image.open(out / split / "masks" / im["file_name"]))
            np.testing.assert_array_equal(mask, data["semantic"][i])
            rgb = np.array(Image.open(out / split / "images" / im["file_name"]))
            np.testing.assert_array_equal(rgb, data["images"][i])
            cats = sorted(a["category_id"] - 1 for a in coco["annotations"] if a["image_id"] == i)
            assert cats == sorted(data["classes"][i].tolist())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "coco"]  # no temp dir left


def test_export_coco_loads_in_pycocotools(tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco")
    paths = export_coco(CFG, tmp_path / "coco", cache_dir=tmp_path / "cache")
    coco = coco_api.COCO(str(paths["val"]))
    assert len(coco.getImgIds()) == CFG.num_val and len(coco.getCatIds()) == 10
    assert len(coco.getAnnIds()) == sum(len(c) for c in load_split(CFG, "val", tmp_path / "cache")["classes"])
    # instance masks (RLE): the digit's semantic pixels inside its box, nothing outside it
    semantic = load_split(CFG, "val", tmp_path / "cache")["semantic"]
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann).astype(bool)
        x, y, w, h = ann["bbox"]
        inside = np.zeros_like(mask)
        inside[int(np.floor(y)):int(np.ceil(y + h)), int(np.floor(x)):int(np.ceil(x + w))] = True
        assert mask.any() and not (mask & ~inside).any()
        np.testing.assert_array_equal(mask, inside & (semantic[ann["image_id"]] == ann["category_id"]))


def test_export_coco_refuses_non_empty_dir(tmp_path):
    out = tmp_path / "coco"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="non-empty"):
        export_coco(CFG, out, cache_dir=tmp_path / "cache")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_export_coco_failure_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ds, "_coco_json", boom)
    with pytest.raises(RuntimeError):
        export_coco(CFG, tmp_path / "coco", cache_dir=tmp_path / "cache")
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_split(CFG, "training")
    with pytest.raises(ValueError):
        SceneConfig(min_digits=3, max_digits=2)
    with pytest.raises(ValueError):
        SceneConfig(min_scale=0.7, max_scale=0.6)


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NASCORE_CACHE", str(tmp_path))
    assert cache_path(CFG, "train").parent == Path(tmp_path)

"""A user's COCO annotation file, checked before pycocotools sees it: types at every level, references between
images and annotations, and masks pycocotools can draw (its C code crashes on polygons far outside the image)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from nascore.errors import NascoreError
from nascore.fileio import DATASET_JSON_MAX_BYTES, load_user_json
from nascore.validation import format_validation_error

Side = Annotated[int, Field(ge=1, le=1 << 15)]  # run lengths fit pycocotools' uint32
_STRICT = ConfigDict(strict=True)  # "3" is no number, true no 1; NaN is refused when the file is parsed


class _Image(TypedDict):
    __pydantic_config__ = _STRICT
    id: int
    file_name: Annotated[str, Field(min_length=1)]
    width: NotRequired[Side]
    height: NotRequired[Side]


class _Rle(TypedDict):
    __pydantic_config__ = _STRICT
    size: Annotated[list[Side], Field(min_length=2, max_length=2)]
    counts: list[Annotated[int, Field(ge=0)]] | str


#: a polygon: x1, y1, x2, y2, ... (at least 3 points; pycocotools reads 4 numbers as a box)
Polygon = Annotated[list[float], Field(min_length=6)]


class _Annotation(TypedDict):
    __pydantic_config__ = _STRICT
    id: int
    image_id: int
    category_id: int
    bbox: Annotated[list[float], Field(min_length=4, max_length=4)]
    iscrowd: NotRequired[Annotated[int, Field(ge=0, le=1)]]
    segmentation: NotRequired[Annotated[list[Polygon], Field(min_length=1)] | _Rle]


class _Category(TypedDict):
    __pydantic_config__ = _STRICT
    id: int


class _Coco(TypedDict):
    __pydantic_config__ = _STRICT
    images: list[_Image]
    annotations: list[_Annotation]
    categories: list[_Category]


_COCO = TypeAdapter(_Coco)
MAX_LINES = 10


def _mask_problem(ann: dict[str, Any], image: dict[str, Any]) -> str | None:
    """What keeps pycocotools from drawing ``ann``'s mask at the size of ``image``, if anything."""
    seg = ann.get("segmentation")
    if seg is None or ann.get("iscrowd"):  # crowd annotations are never drawn
        return None
    if "width" not in image or "height" not in image:
        return f"its image {image['id']} has no width and height, which masks need"
    w, h = image["width"], image["height"]
    if isinstance(seg, list):
        for poly in seg:
            xs, ys = poly[0::2], poly[1::2]
            if min(xs) < -w or max(xs) > 2 * w or min(ys) < -h or max(ys) > 2 * h:
                return f"a polygon point lies far outside the {w}x{h} image"
        return None
    if seg["size"] != [h, w]:
        return f"the RLE mask is {seg['size'][1]}x{seg['size'][0]}, its image {w}x{h}"
    counts = seg["counts"] if isinstance(seg["counts"], list) else _rle_string_counts(seg["counts"])
    if counts is None:
        return "the RLE counts string cannot be decoded"
    if min(counts, default=0) < 0 or sum(counts) != w * h:  # pycocotools would leave pixels unwritten
        return f"the RLE counts do not add up to {w}x{h} pixels"
    return None


def _rle_string_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed RLE string (pycocotools' rleFrString, which reads past a cut string);
    None if it is not one."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            c = ord(text[p]) - 48 if p < len(text) and k < 7 else -1
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << 5 * k
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        counts.append(x + counts[-2] if len(counts) > 2 else x)
    return counts


def read_coco(path: Path) -> dict[str, Any]:
    """The parsed annotation file; anything pycocotools or the coco dataset would trip on is a NascoreError
    naming the file, the entry and what was expected."""
    data = load_user_json(path, "COCO annotations", DATASET_JSON_MAX_BYTES, finite=True)
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise NascoreError(f"{path} is not COCO detection JSON: missing {', '.join(missing)}")
    try:
        _COCO.validate_python(data)
    except ValidationError as exc:
        lines = format_validation_error(exc)
        more = f"\n  ... and {len(lines) - MAX_LINES} more" if len(lines) > MAX_LINES else ""
        raise NascoreError(f"{path} is not COCO detection JSON:\n"
                           + "\n".join(f"  {line}" for line in lines[:MAX_LINES]) + more) from None
    images = {im["id"]: im for im in data["images"]}
    for i, ann in enumerate(data["annotations"]):
        if ann["image_id"] not in images:
            raise NascoreError(f"{path}: annotations[{i}].image_id: {ann['image_id']} is not the id of an image "
                               "in images")
        problem = _mask_problem(ann, images[ann["image_id"]])
        if problem:
            raise NascoreError(f"{path}: annotations[{i}].segmentation: {problem}")
    return data

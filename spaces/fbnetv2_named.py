"""FBNetV2-F1..F4, L1, L2 as named archs of the ``fbnetv2`` space, transcribed from mobile-vision's
``fbnet_modeldef_cls_fbnetv2.py`` (the definitions behind the published models).

Each is one arch of a space configured to its macro-architecture: consecutive blocks with the same output
channels form a stage (mobile-vision adds a residual exactly where stride is 1 and the width is kept, which is
this space's rule inside a stage), and the per-block types and expansion rates are the choices.
"""
from __future__ import annotations

from nascore.arch import Arch

#: name -> (input size, stem channels, head channels, blocks as type:channels:stride:expansion)
DEFINITIONS = {
    "fbnetv2_f1": (128, 8, 1600, """
        k5:8:1:1 k5:24:2:5.4566 k5:24:1:4.7912 k5_se:32:2:5.3501 k5_se:24:1:4.5379 k5_hs:56:2:5.7133
        k3_hs:56:1:4.1212 k3_se_hs:56:1:5.1246 skip:80:1:5.0333 k5_se_hs:80:1:4.507 k5_se_hs:80:1:1.7712
        k3_se_hs:144:2:4.5685 k5_se_hs:144:1:5.84 k5_se_hs:144:1:6.8754 skip:224:1:6.5245"""),
    "fbnetv2_f4": (224, 16, 1984, """
        k3_hs:16:1:1 k5_hs:24:2:5.4566 k5_hs:24:1:1.7912 k5_hs:24:1:1.7912 k5_se:32:2:5.3501 k5_se:32:1:3.5379
        k5_se:32:1:4.5379 k5_se:32:1:4.5379 k5_hs:64:2:5.7133 k3_hs:64:1:2.1212 skip:64:1:3.1246
        k3_hs:104:1:5.0333 k5_se_hs:104:1:2.507 k5_se_hs:104:1:1.7712 k5_se_hs:112:1:3.7712
        k3_se_hs:184:2:5.5685 k5_se_hs:184:1:2.84 k5_se_hs:184:1:4.8754 skip:224:1:6.5245"""),
    "fbnetv2_l1": (224, 16, 1984, """
        k3_hs:16:1:1 k5_hs:24:2:5.4566 k5_hs:24:1:1.7912 k3_hs:24:1:1.7912 k5_hs:24:1:1.7912
        k5_se_hs:40:2:5.3501 k5_se_hs:32:1:3.5379 k5_se_hs:32:1:4.5379 k5_se_hs:32:1:4.5379 k5_hs:64:2:5.7133
        k3_hs:64:1:2.1212 skip:64:1:3.1246 k3_hs:64:1:3.1246 k3_hs:112:1:5.0333 k5_se_hs:112:1:2.507
        k5_se_hs:112:1:1.7712 k5_se_hs:112:1:2.7712 k5_se_hs:112:1:3.7712 k5_se_hs:112:1:3.7712
        k3_se_hs:184:2:5.5685 k5_se_hs:184:1:2.84 k5_se_hs:184:1:2.84 k5_se_hs:184:1:4.8754
        k5_se_hs:184:1:4.8754 skip:224:1:6.5245"""),
}
# F2 and F3 are F1's blocks at inputs 160 and 192 (F3 with a 1984-wide head); L2 is L1 at 256
DEFINITIONS["fbnetv2_f2"] = (160, *DEFINITIONS["fbnetv2_f1"][1:])
DEFINITIONS["fbnetv2_f3"] = (192, 8, 1984, DEFINITIONS["fbnetv2_f1"][3])
DEFINITIONS["fbnetv2_l2"] = (256, *DEFINITIONS["fbnetv2_l1"][1:])


def to_arch(name: str, input_size: int, stem: int, head: int, blocks: str) -> Arch:
    stages: list[dict] = []
    picks: list[list[tuple[str, str]]] = []
    for b in blocks.split():
        label, channels, stride, expansion = b.split(":")
        if not stages or int(channels) != stages[-1]["channels"][0] or stride == "2":
            stages.append({"channels": [int(channels)], "blocks": 0, "stride": int(stride), "expansions": [],
                           "types": [], "resolutions": [1]})
            picks.append([])
        stage = stages[-1]
        stage["blocks"] += 1
        for key, value in (("types", label), ("expansions", float(expansion))):
            if value not in stage[key]:
                stage[key].append(value)
        picks[-1].append((label, f"{float(expansion):g}"))
    choices = {}
    for s, (stage, blocks_) in enumerate(zip(stages, picks), 1):
        for b, (label, expansion) in enumerate(blocks_, 1):
            if len(stage["types"]) > 1:
                choices[f"s{s}.b{b}.type"] = label
            if len(stage["expansions"]) > 1:
                choices[f"s{s}.b{b}.expansion"] = expansion
    config = {"input_size": input_size, "stem": stem, "stages": stages, "head_channels": head}
    return Arch(space="fbnetv2", name=name, config=config, choices=choices)


def named_archs() -> dict[str, Arch]:
    return {name: to_arch(name, *definition) for name, definition in sorted(DEFINITIONS.items())}

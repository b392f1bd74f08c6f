"""MobileNetV2 as the fbnet space's named arch ``mobilenet_v2``, and backbones as chains of layers (branching)."""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import nascore  # noqa: F401  (registers the named archs with timm)
from nascore.arch import arch_space, resolve_arch
from nascore.costs.flops import count_macs, count_params
from nascore.registry import get_registry
from nascore.spaces.fbnet import FBNetConfig, feature_taps, layer_plan


def test_mobilenet_v2_matches_torchvision():
    ours = timm.create_model("nascore_mobilenet_v2", num_classes=1000).eval()
    theirs = torchvision.models.mobilenet_v2(num_classes=1000).eval()
    x = torch.zeros(1, 3, 224, 224)
    assert count_macs(ours, x) == count_macs(theirs, x) == 300_774_272
    assert count_params(ours) == count_params(theirs) == 3_504_872
    # feature levels: torchvision's features after the last block of each reduction
    backbone = arch_space(resolve_arch("mobilenet_v2"), "mobilenet_v2").build(resolve_arch("mobilenet_v2")).eval()
    ours_feats = backbone(torch.randn(1, 3, 224, 224))
    shapes, y = [], torch.randn(1, 3, 224, 224)
    for i, layer in enumerate(theirs.features[:-1]):  # the last is the 1x1 head conv (our classifier's)
        y = layer(y)
        if i in (1, 3, 6, 13, 17):
            shapes.append(tuple(y.shape))
    assert [tuple(f.shape) for f in ours_feats] == shapes
    relu6 = [m for m in backbone.modules() if isinstance(m, torch.nn.ReLU6)]
    assert relu6 and not [m for m in backbone.modules() if type(m) is torch.nn.ReLU]


def test_default_stages_keep_fbnet_taps():
    taps = feature_taps(layer_plan(FBNetConfig()))
    assert taps == [(0, 2), (4, 4), (8, 8), (16, 16), (21, 32)]


def test_bad_stage_is_named():
    with pytest.raises(ValueError, match=r"stage 1 is \[24, 2, 3\]: expected .*stride 1 or 2"):
        FBNetConfig.model_validate({"stages": [[16, 1, 1], [24, 2, 3]]})


@pytest.mark.parametrize("name", ["fbnet_a", "mobilenet_v2", "fbnetv2_f1"])
def test_chain_reproduces_forward(name):
    arch = resolve_arch(name)
    model = arch_space(arch, name, input_size=96).build(arch).eval()
    chain = model.chain()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
        h, got = chain.stem(x), []
        for i, (_, layer) in enumerate(chain.layers):
            h = layer(h)
            if i in chain.taps:
                got.append(h)
    assert len(got) == len(expected) == len(model.feature_info)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    modules = {id(m) for m in model.modules()}
    assert all(id(layer) in modules for _, layer in chain.layers)  # shared, not copied


def test_multi_path_backbone_is_not_a_chain():
    cls = get_registry().get("space", "fbnetv5")
    space = cls(cls.Config.model_validate({"input_size": 64}))
    from nascore.arch import Arch

    arch = Arch(space="fbnetv5", config={"input_size": 64}, choices={d.name: "keep" for d in space.decisions()})
    with pytest.raises(NotImplementedError, match="not a single sequence of layers"):
        space.build(arch).chain()

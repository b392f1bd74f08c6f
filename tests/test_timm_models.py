"""Found archs as timm models: every named arch through timm.create_model (classification and
features_only), the contract's methods, arch files registered by the API and by a spec, SMP's tu- encoders."""
from __future__ import annotations

import pytest
import timm
import torch
import yaml

import nascore
from nascore.arch import Arch
from nascore.spaces.fbnet import FBNetSpace
from nascore.spaces.fbnetv2 import FBNetV2Space
from nascore.spaces.fbnetv5 import FBNetV5Space

NAMED = sorted(list(FBNetSpace.named_archs()) + list(FBNetV2Space.named_archs()))
X = torch.randn(2, 3, 64, 64)


def test_every_named_arch_is_a_timm_model():
    assert timm.list_models("nascore_*") == [f"nascore_{n}" for n in NAMED]


@pytest.mark.parametrize("name", NAMED)
def test_classification_contract(name):
    model = timm.create_model(f"nascore_{name}", num_classes=10).eval()
    assert model.num_classes == 10 and model(X).shape == (2, 10)
    features = model.forward_features(X)
    assert features.shape[1] == model.feature_info[-1]["num_chs"]
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(features), model(X))
    model.reset_classifier(0)
    assert model(X).shape == (2, model.num_features) and isinstance(model.get_classifier(), torch.nn.Identity)
    model.reset_classifier(5)
    assert model(X).shape == (2, 5)


@pytest.mark.parametrize("name", NAMED)
def test_features_only_with_out_indices(name):
    full = timm.create_model(f"nascore_{name}", features_only=True)
    outs = full(X)
    assert len(outs) == 5 and full.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert [o.shape[1] for o in outs] == full.feature_info.channels()
    some = timm.create_model(f"nascore_{name}", features_only=True, out_indices=(1, -1))
    assert some.feature_info.reduction() == [4, 32] and [o.shape[-1] for o in some(X)] == [16, 2]


def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("nascore_fbnet_c", pretrained=True)
    with pytest.raises(ValueError, match="output_stride=16"):
        timm.create_model("nascore_fbnet_c", features_only=True, output_stride=16)
    with pytest.raises(ValueError, match="out_indices"):
        timm.create_model("nascore_fbnet_c", features_only=True, out_indices=(7,))


def test_in_chans_and_checkpoint_path(tmp_path):
    model = timm.create_model("nascore_fbnet_a", in_chans=1, num_classes=4)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 4)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    again = timm.create_model("nascore_fbnet_a", in_chans=1, num_classes=4, checkpoint_path=str(tmp_path / "w.pth"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def fbnetv5_file(tmp_path):
    space = FBNetV5Space({"width": 0.25, "input_size": 64, "blocks": [1, 1, 1, 1]})
    choices = {d.name: ("skip" if i % 2 else "keep") for i, d in enumerate(space.decisions())}
    path = tmp_path / "arch_segmentation.json"
    Arch(space="fbnetv5", config=space.config.model_dump(mode="json"), choices=choices).save(path)
    return path


def test_an_arch_file_registered_by_the_api(tmp_path):
    assert nascore.register_timm_model("my_found_net", fbnetv5_file(tmp_path)) == "my_found_net"
    model = timm.create_model("my_found_net", features_only=True, out_indices=(1, 2, 3, 4))
    assert model.feature_info.reduction() == [4, 8, 16, 32] and len(model(X)) == 4


def test_an_arch_file_registered_by_a_spec(tmp_path):
    from nascore.spec import load_spec

    base = yaml.safe_load(open("examples/quickstart.yaml"))
    base["timm_models"] = {"spec_found_net": str(fbnetv5_file(tmp_path))}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(base))
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.dump()["timm_models"] == base["timm_models"]
    assert timm.create_model("spec_found_net", num_classes=3)(X).shape == (2, 3)


@pytest.mark.parametrize("ref, message", [("nope.json", "timm_models.bad_net: "),
                                          ("fbnet_c", "timm_models.resnet18: timm already has a model")])
def test_bad_spec_timm_models_are_named(tmp_path, ref, message):
    from nascore.errors import SpecError
    from nascore.spec import load_spec

    base = yaml.safe_load(open("examples/quickstart.yaml"))
    base["timm_models"] = {("bad_net" if ref == "nope.json" else "resnet18"): ref}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "s.yaml")
    assert message in str(err.value)


@pytest.mark.parametrize("name", NAMED)
def test_smp_timm_universal_encoder(name):
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = smp.Unet(f"tu-nascore_{name}", encoder_weights=None, classes=11).eval()
    with torch.no_grad():
        assert model(X).shape == (2, 11, 64, 64)

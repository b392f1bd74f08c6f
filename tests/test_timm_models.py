"""Found archs as timm models: every named arch through timm.create_model (classification and
features_only), the contract's methods, the pretrained cfg and timm's num_features / head_hidden_size as timm's
own model tests check them, arch files registered by the API and by a spec, SMP's tu- encoders."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import timm
import torch
import yaml

import nascore
from nascore.arch import Arch
from nascore.spaces.fbnet import FBNetSpace
from nascore.spaces.fbnetv2 import FBNetV2Space
from nascore.spaces.fbnetv5 import FBNetV5Space

ARCHS = {**FBNetSpace.named_archs(), **FBNetV2Space.named_archs()}
NAMED = sorted(ARCHS)
X = torch.randn(2, 3, 64, 64)


def test_every_named_arch_is_a_timm_model():
    assert timm.list_models("nascore_*") == [f"nascore_{n}" for n in NAMED]


@pytest.mark.parametrize("first, then", [("nascore", "timm"), ("timm", "nascore")])
def test_named_archs_after_import_nascore_whichever_is_imported_first(first, then):
    code = f"import {first}\nimport {then}\nimport timm\nprint(timm.create_model('nascore_fbnet_c').num_classes)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert (proc.returncode, proc.stdout) == (0, "1000\n"), proc.stderr


@pytest.mark.parametrize("name", NAMED)
def test_classification_contract(name):
    model = timm.create_model(f"nascore_{name}", num_classes=10).eval()
    assert model.num_classes == 10 and model(X).shape == (2, 10)
    features = model.forward_features(X)
    assert features.shape[1] == model.feature_info[-1]["num_chs"]
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert features.shape[1] == model.num_features
    assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)
    torch.testing.assert_close(model.forward_head(features), model(X))
    model.reset_classifier(0)
    assert model(X).shape == (2, model.head_hidden_size) and isinstance(model.get_classifier(), torch.nn.Identity)
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
    with pytest.raises(TypeError, match="not_a_model_arg"):  # timm: unknown arguments raise, not pass silently
        timm.create_model("nascore_fbnet_c", not_a_model_arg=1)
    with pytest.raises(ValueError, match="global_pool='max'"):
        timm.create_model("nascore_fbnet_c", global_pool="max")
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("nascore_fbnet_c", pretrained=True)
    with pytest.raises(ValueError, match="output_stride=16"):
        timm.create_model("nascore_fbnet_c", features_only=True, output_stride=16)
    with pytest.raises(ValueError, match="out_indices"):
        timm.create_model("nascore_fbnet_c", features_only=True, out_indices=(7,))


CFG_KEYS = {"input_size", "pool_size", "crop_pct", "interpolation", "mean", "std", "num_classes", "first_conv",
            "classifier"}


@pytest.mark.parametrize("name", NAMED)
def test_pretrained_cfg_says_what_nascore_feeds_the_model(name):
    from nascore.tasks.datasets import IMAGENET_MEAN, IMAGENET_STD

    model = timm.create_model(f"nascore_{name}")
    cfg, size = model.pretrained_cfg, ARCHS[name].config.get("input_size", 224)  # FBNetV2-F*: 128..256
    assert CFG_KEYS <= set(cfg) and model.default_cfg is cfg
    # image-folder's eval transform: Resize(size) (bilinear) + CenterCrop(size), ImageNet normalisation
    assert (cfg["crop_pct"], cfg["interpolation"], cfg["mean"], cfg["std"]) == (1.0, "bilinear", IMAGENET_MEAN,
                                                                                IMAGENET_STD)
    assert cfg["input_size"] == (3, size, size) and cfg["pool_size"] == (-(-size // 32),) * 2 and model.in_chans == 3
    assert cfg["num_classes"] == model.num_classes == 1000 and cfg["classifier"] == "head.fc"
    # timm's registry has the same cfg (but first_conv, which needs the built model)
    registered = timm.models.get_pretrained_cfg(f"nascore_{name}").to_dict()
    assert {k: v for k, v in cfg.items() if k != "first_conv"} == {k: v for k, v in registered.items()
                                                                   if k != "first_conv"}
    assert timm.data.resolve_data_config(model=model)["input_size"] == (3, size, size)


def _check_cfg_against_the_model(name, **kwargs):
    """What timm's test_model_default_cfgs checks, in shapes only (the meta device computes no values)."""
    model = timm.create_model(name, device="meta", **kwargs).eval()
    cfg, state = model.pretrained_cfg, model.state_dict()
    x = torch.empty(1, *cfg["input_size"], device="meta")
    features = model.forward_features(x)
    assert features.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]
    assert tuple(features.shape[2:]) == cfg["pool_size"]
    pre_logits = model.forward_head(features, pre_logits=True)
    assert pre_logits.shape == (1, model.head_hidden_size)
    # first_conv and classifier name real modules; first_conv is the one the image goes into
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    seen = []
    hook = model.get_submodule(cfg["first_conv"]).register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model(x)
    hook.remove()
    assert len(seen) == 1 and seen[0] is x and seen[0].shape[1] == model.in_chans == cfg["input_size"][0]
    # without classifier: the pooled pre-logits; without pooling either: the unpooled map at pool_size
    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == pre_logits.shape
    model.reset_classifier(0, "")
    out = model(x)
    assert out.ndim == 4 and tuple(out.shape[2:]) == cfg["pool_size"]
    headless = timm.create_model(name, device="meta", num_classes=0, **kwargs).eval()
    assert headless(x).shape == pre_logits.shape and headless.pretrained_cfg["num_classes"] == 0
    unpooled = timm.create_model(name, device="meta", num_classes=0, global_pool="", **kwargs).eval()
    assert tuple(unpooled(x).shape[2:]) == cfg["pool_size"]


@pytest.mark.parametrize("name", NAMED)
def test_cfg_num_features_and_head_hidden_size_match_the_model(name):
    _check_cfg_against_the_model(f"nascore_{name}")


def test_cfg_of_an_arch_file_at_its_input_size(tmp_path):
    nascore.register_timm_model("cfg_found_net", fbnetv5_file(tmp_path))
    model = timm.create_model("cfg_found_net")
    assert model.pretrained_cfg["input_size"] == (3, 64, 64) and model.pretrained_cfg["pool_size"] == (2, 2)
    _check_cfg_against_the_model("cfg_found_net")
    _check_cfg_against_the_model("cfg_found_net", in_chans=1)


def test_cfg_follows_in_chans_and_the_overlay():
    model = timm.create_model("nascore_fbnet_c", in_chans=1, pretrained_cfg_overlay={"input_size": (3, 96, 96),
                                                                                     "mean": (0.5, 0.5, 0.5)})
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (1, 96, 96) and cfg["pool_size"] == (3, 3) and cfg["mean"] == (0.5, 0.5, 0.5)
    assert model.get_submodule(cfg["first_conv"]).in_channels == 1 == model.in_chans
    features = timm.create_model("nascore_fbnetv2_f1", features_only=True)
    assert not {"num_classes", "classifier"} & set(features.pretrained_cfg)  # as timm's features models
    assert features.pretrained_cfg["first_conv"] == "backbone.stem.conv" and features.in_chans == 3


@pytest.mark.parametrize("name", ["fbnet_c", "fbnetv2_f1"])
def test_unpooled_head_gives_logits_per_position(name):
    model = timm.create_model(f"nascore_{name}", num_classes=5, global_pool="").eval()
    with torch.no_grad():
        features = model.forward_features(X)
        logits, pre_logits = model(X), model.forward_head(features, pre_logits=True)
    assert logits.shape == (2, 5, 2, 2) and pre_logits.shape == (2, model.head_hidden_size, 2, 2)
    torch.testing.assert_close(logits.mean((2, 3)), model.get_classifier()(pre_logits.mean((2, 3))))
    if name == "fbnet_c":  # conv-pool head (1x1 conv + BN + act, then the mean): the mean is the pooled pre-logits
        torch.testing.assert_close(pre_logits.mean((2, 3)), model.head.pool(features))


def test_device_dtype_and_reset_classifier_follow_the_model():
    model = timm.create_model("nascore_fbnet_a", device="meta", dtype=torch.float64).eval()
    assert {(t.device.type, t.dtype) for t in model.state_dict().values() if t.is_floating_point()} == \
        {("meta", torch.float64)}
    model.reset_classifier(3)
    fc = model.get_classifier()
    assert (fc.weight.device.type, fc.weight.dtype, fc.training) == ("meta", torch.float64, False)
    assert fc.weight.shape == (3, model.head_hidden_size)


@pytest.mark.parametrize("name", NAMED)
def test_named_arch_models_script(name):
    """timm's test_model_forward_torchscript, plus: the scripted model computes what the eager one does."""
    model = timm.create_model(f"nascore_{name}", num_classes=4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, timm still tests it
        scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(X), model(X))


def _fx_scripted(model: torch.nn.Module) -> torch.nn.Module:
    """timm's test_model_forward_fx_torchscript: the model traced with timm's leaf modules and functions
    (torchvision's feature extractor up to the graph's last node), then scripted."""
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    tracer_kwargs = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions(),
                     "param_shapes_constant": True}
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    traced = create_feature_extractor(model, [eval_nodes[-1]], tracer_kwargs=tracer_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, timm still tests it
        return torch.jit.script(traced)


@pytest.mark.parametrize("name", NAMED)
def test_named_arch_models_fx_trace_and_script(name):
    """The fx-traced model scripts (no postponed annotation reaches the generated code) and computes what the
    eager one does."""
    model = timm.create_model(f"nascore_{name}", num_classes=4).eval()
    scripted = _fx_scripted(model)
    with torch.no_grad():
        (out,) = scripted(X).values()
        torch.testing.assert_close(out, model(X))


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

"""Found architectures as timm models: nascore's timm integration, a plugin (entry point ``timm``) like any other.

Every named arch of the installed spaces is ``timm.create_model("nascore_<name>")`` once the plugins are loaded
and timm is imported, whichever comes last (``nascore_registry_loaded``; ``import nascore`` loads the plugins when
timm is imported, so that ``import nascore`` is all a timm user needs). ``register_timm_model(name, arch)`` (or a
spec's ``timm_models:`` block, ``nascore_spec_loaded``) adds any arch file under a name of the user's choice.
This module imports timm only to register a model. The models follow
timm's contract: ``num_classes``, ``reset_classifier``, ``forward_features`` / ``forward_head``,
``num_features`` (the channels of ``forward_features``' output) and ``head_hidden_size`` (the width of
``forward_head(x, pre_logits=True)``), ``feature_info``, a pretrained cfg (``model.pretrained_cfg``, also in
timm's registry: ``timm.get_pretrained_cfg_value``), and ``features_only=True`` with ``out_indices`` (a
``FeatureInfo``), so that segmentation-models-pytorch's timm-universal encoders (``"tu-nascore_<name>"``) take
them. Nothing is downloaded: ``pretrained=True`` is refused; timm's ``checkpoint_path=`` loads the user's own
weights.
"""
# No `from __future__ import annotations` here: torch.fx copies a root module's forward annotations into the
# code it generates, and a postponed "Tensor" (a string) becomes the type name '_Tensor_', which torch.jit.script
# of the traced model refuses (timm's test_model_forward_fx_torchscript; tests/test_timm_models.py).
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import wrapt
from torch import Tensor, nn

from nascore.arch import Arch, arch_space, resolve_arch
from nascore.errors import NascoreError
from nascore.features import ClassifierHead
from nascore.hookspecs import hookimpl
from nascore.registry import Problem

if TYPE_CHECKING:
    from nascore.registry import Registry
    from nascore.spec_model import SpecModel

# timm is imported inside the functions that use it: the registry loads this plugin for every command, and
# `nascore validate` loads no timm (tests/test_startup.py)

PREFIX = "nascore_"
REDUCTION = 32  # the deepest feature level's reduction of nascore's spaces (their searched strides)
CLASSIFIER = "head.fc"
POOLS = ("avg", "")  # nascore heads average (timm's "avg"); "" keeps the map unpooled (timm's no pooling)

# timm's register_model reads the pretrained cfg of ``fn.__name__`` from this module's ``default_cfgs``
default_cfgs: dict[str, dict[str, Any]] = {}


def _levels(backbone: nn.Module, prefix: str) -> list[dict]:
    return [{**level, "module": f"{prefix}{level['module']}"} for level in backbone.feature_info]


def _input_conv(backbone: nn.Module) -> str | None:
    """The name of the convolution that takes the 3-channel image (the first 3-input-channel Conv2d)."""
    return next((name for name, module in backbone.named_modules()
                 if isinstance(module, nn.Conv2d) and module.in_channels == 3), None)


def _adapt_input(backbone: nn.Module, in_chans: int) -> str | None:
    """Give the first convolution ``in_chans`` input channels (fresh weights: nothing is pretrained); returns
    its name (None: no 3-channel convolution, and ``in_chans`` is 3)."""
    name = _input_conv(backbone)
    if in_chans == 3:
        return name
    if name is None:
        raise ValueError(f"in_chans={in_chans}: the arch has no 3-channel input convolution to adapt")
    module = backbone.get_submodule(name)
    parent_name, _, child = name.rpartition(".")
    parent = backbone.get_submodule(parent_name) if parent_name else backbone
    setattr(parent, child, nn.Conv2d(in_chans, module.out_channels, module.kernel_size, module.stride,
                                     module.padding, module.dilation, module.groups, module.bias is not None,
                                     device=module.weight.device, dtype=module.weight.dtype))
    return name


def pool_size(input_size: Sequence[int], reduction: int) -> tuple[int, int]:
    """The spatial size of a feature map at ``reduction`` for an (H, W) (or (C, H, W)) input: stride-2
    convolutions padded 'same' round up."""
    return tuple(math.ceil(s / reduction) for s in input_size[-2:])


def _data_cfg(arch: Arch) -> dict[str, Any]:
    """What timm's registry knows of a model without building it: nascore's data pipeline (image-folder's
    Resize + CenterCrop to the size: crop_pct 1, bilinear; ImageNet mean/std) at the arch's input size, and
    pool_size at the searched stride. A created model's cfg has the built model's pool_size and first_conv."""
    # timm: commands that do not need it never load it (tests/test_startup.py)
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    size = _input_size(arch)
    return {"input_size": (3, *size), "pool_size": pool_size(size, REDUCTION), "crop_pct": 1.0,
            "interpolation": "bilinear", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "num_classes": 1000, "first_conv": None, "classifier": CLASSIFIER}


class NascoreClassifier(nn.Module):
    """timm's classification model contract over a nascore backbone and nascore's classifier head.
    ``num_features``: the channels of ``forward_features``' output (the backbone's last level);
    ``head_hidden_size``: the width the head gives its linear layer (the pre-logits: FBNet's 1984-channel 1x1
    conv, or ``num_features`` for a plain pool + linear head), what ``forward_head(x, pre_logits=True)`` and
    the model without classifier (``num_classes=0``) return.
    """
    __jit_ignored_attributes__ = ("feature_info", "pretrained_cfg", "default_cfg")  # dicts TorchScript can't type

    def __init__(self, backbone: nn.Module, num_classes: int = 1000, drop_rate: float = 0.0,
                 global_pool: str = "avg", in_chans: int = 3, pretrained_cfg: dict | None = None):
        super().__init__()
        self.backbone = backbone
        pre = backbone.pre_logits
        self.in_chans = in_chans
        self.num_features = backbone.feature_info[-1]["num_chs"]
        self.head_hidden_size = pre.num_features if pre is not None else self.num_features
        self.head = ClassifierHead(self.num_features, max(num_classes, 1), pre, drop_rate)
        self.num_classes = num_classes
        self.global_pool = "avg"
        self.reset_classifier(num_classes, global_pool)
        self.feature_info = _levels(backbone, "backbone.")
        self.pretrained_cfg = self.default_cfg = dict(pretrained_cfg or {})

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh linear layer for ``num_classes`` (0: none), on the model's device and dtype; ``global_pool``:
        'avg' (nascore heads average) or '' (no pooling: the head's pre-logits map), None keeps the current."""
        if global_pool is not None:
            if global_pool not in POOLS:
                raise ValueError(f"global_pool={global_pool!r}: nascore heads pool by averaging ('avg'), or not "
                                 "at all ('')")
            self.global_pool = global_pool
        self.num_classes = num_classes
        if num_classes > 0:
            ref = next(self.backbone.parameters(), None)
            fc = nn.Linear(self.head_hidden_size, num_classes, device=None if ref is None else ref.device,
                           dtype=None if ref is None else ref.dtype)
            self.head.fc = fc.train(self.training)
        else:
            self.head.fc = nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone(x)[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pooled: (N, head_hidden_size) pre-logits, or (N, num_classes) logits. Unpooled (global_pool ''):
        the same per position, (N, C, H, W)."""
        if self.global_pool:
            x = self.head.dropout(self.head.pool(x))
            return x if pre_logits else self.head.fc(x)
        x = self.head.dropout(self.head.conv_head(x))
        return x if pre_logits else self.head.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class NascoreFeatures(nn.Module):
    """``features_only=True``: the backbone's levels at ``out_indices``, described by a timm ``FeatureInfo``."""
    __jit_ignored_attributes__ = ("feature_info", "pretrained_cfg", "default_cfg")

    def __init__(self, backbone: nn.Module, out_indices: Sequence[int] | None = None, in_chans: int = 3,
                 pretrained_cfg: dict | None = None):
        from timm.models import FeatureInfo

        super().__init__()
        self.backbone = backbone
        self.in_chans = in_chans
        n = len(backbone.feature_info)
        out_indices = tuple(range(n) if out_indices is None else
                            (i if i >= 0 else n + i for i in out_indices))  # timm allows negative indices
        if not out_indices or any(not 0 <= i < n for i in out_indices):
            raise ValueError(f"out_indices: the arch has {n} feature levels (0..{n - 1}), got {out_indices}")
        self.out_indices = out_indices
        self.feature_info = FeatureInfo(_levels(backbone, "backbone."), out_indices)
        self.pretrained_cfg = self.default_cfg = dict(pretrained_cfg or {})

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.backbone(x)
        return [features[i] for i in self.out_indices]


def _build(arch: Arch, ref: str) -> nn.Module:

    return arch_space(arch, ref).build(arch)


def _entrypoint(name: str, arch: Arch, ref: str) -> Callable[..., nn.Module]:
    def create(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: Any = None,
               cache_dir: Any = None, *, features_only: bool = False, out_indices: Sequence[int] | None = None,
               num_classes: int | None = None, in_chans: int | None = None, drop_rate: float = 0.0,
               output_stride: int | None = None, global_pool: str | None = None, device: Any = None,
               dtype: torch.dtype | None = None, **unknown: Any) -> nn.Module:
        from timm.models import resolve_pretrained_cfg

        if pretrained:
            raise ValueError(f"{name} has no pretrained weights (nascore downloads nothing); train it with "
                             "`nascore train`, then pass checkpoint_path=... to timm.create_model")
        if output_stride not in (None, 32):
            raise ValueError(f"{name}: output_stride={output_stride} is not supported (nascore archs are built at "
                             "their searched strides: 32)")
        if unknown:
            raise TypeError(f"{name}: unexpected arguments {sorted(unknown)}")
        if global_pool not in (None, *POOLS):
            raise ValueError(f"global_pool={global_pool!r}: nascore heads pool by averaging ('avg'), or not at "
                             "all ('')")
        # as timm's models: the resolved cfg (registry entry, pretrained_cfg, overlay) gives the defaults
        cfg = resolve_pretrained_cfg(name, pretrained_cfg, pretrained_cfg_overlay).to_dict()
        num_classes = cfg.get("num_classes", 1000) if num_classes is None else num_classes
        in_chans = cfg["input_size"][0] if in_chans is None else in_chans
        with torch.device(device) if device is not None else nullcontext():
            backbone = _build(arch, ref)
            first_conv = _adapt_input(backbone, in_chans)
            cfg["input_size"] = (in_chans, *cfg["input_size"][1:])
            # what the built model says, unless the overlay set it
            facts = {"pool_size": pool_size(cfg["input_size"], backbone.feature_info[-1]["reduction"]),
                     "first_conv": None if first_conv is None else f"backbone.{first_conv}"}
            cfg.update({k: v for k, v in facts.items() if k not in (pretrained_cfg_overlay or {})})
            if features_only:
                for key in ("num_classes", "classifier"):  # as timm's features models' cfg
                    cfg.pop(key, None)
                model = NascoreFeatures(backbone, out_indices, in_chans, cfg)
            else:
                cfg["num_classes"] = num_classes
                model = NascoreClassifier(backbone, num_classes, drop_rate, "avg" if global_pool is None
                                          else global_pool, in_chans, cfg)
        return model if dtype is None else model.to(dtype=dtype)

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"nascore arch {ref} as a timm model."
    return create


def _input_size(arch: Arch) -> tuple[int, int]:
    size = arch.config.get("input_size", 224)
    return size, size


_REGISTERED: set[str] = set()


def registered_here() -> set[str]:
    """The timm model names nascore registered in this process."""
    return set(_REGISTERED)


def _register(name: str, arch: Arch, ref: str) -> None:
    from timm.models import register_model

    default_cfgs[name] = {**_data_cfg(arch), "description": f"nascore arch {ref} (space {arch.space}), "
                                                            "no pretrained weights"}
    register_model(_entrypoint(name, arch, ref))
    _REGISTERED.add(name)


def register_timm_model(name: str, arch: Arch | str | Path, ref: str | None = None) -> str:
    """Register ``arch`` (an ``Arch``, an arch file or a named arch) with timm as ``name``; returns the name.
    ``ref`` names it in messages (default: the file or name given). Registering a name again replaces it."""

    resolved = arch if isinstance(arch, Arch) else resolve_arch(str(arch))
    _register(name, resolved, ref or (str(arch) if not isinstance(arch, Arch) else arch.name or name))
    return name


def _register_named_archs(registry: "Registry") -> None:
    """``nascore_<name>`` for every named arch of the registry's spaces that timm does not have yet."""
    import timm


    for entry in list(registry.entries["space"].values()):
        try:
            for arch_name, arch in entry.cls.named_archs().items():
                if not timm.is_model(PREFIX + arch_name):
                    _register(PREFIX + arch_name, arch, arch_name)
        except Exception as exc:  # a plugin's named_archs() must not take the host down
            registry.problems.append(Problem(entry.source, f"named archs of space '{entry.name}' could not be "
                                                           f"registered with timm: {type(exc).__name__}: {exc}"))


@hookimpl
def nascore_registry_loaded(registry: "Registry") -> None:
    """The registry's named archs become timm models once timm is imported (now, if it is)."""
    wrapt.register_post_import_hook(lambda _timm: _register_named_archs(registry), "timm")


@hookimpl
def nascore_spec_loaded(spec: "SpecModel", registry: "Registry") -> list[str]:
    """Register the spec's ``timm_models``; returns the problems, each naming its field."""
    if not spec.timm_models:
        return []
    import timm


    errors = []
    for name, ref in spec.timm_models.items():
        if timm.is_model(name) and name not in registered_here():
            errors.append(f"timm_models.{name}: timm already has a model of that name; choose another")
            continue
        try:
            arch = resolve_arch(ref, registry)
            arch_space(arch, ref, registry)
        except NascoreError as exc:
            errors.append(f"timm_models.{name}: {exc}")
            continue
        register_timm_model(name, arch, ref)
    return errors

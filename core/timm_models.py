"""Found architectures as timm models.

Every named arch of nascore's spaces is ``timm.create_model("nascore_<name>")`` after ``import nascore``
(plugin spaces' named archs once the registry has loaded them); ``register_timm_model(name, arch)`` (or a
spec's ``timm_models:`` block) adds any arch file under a name of the user's choice. The models follow
timm's contract: ``num_classes``, ``reset_classifier``, ``forward_features`` / ``forward_head``,
``feature_info``, and ``features_only=True`` with ``out_indices`` (a ``FeatureInfo``), so that
segmentation-models-pytorch's timm-universal encoders (``"tu-nascore_<name>"``) take them. Nothing is
downloaded: ``pretrained=True`` is refused; timm's ``checkpoint_path=`` loads the user's own weights.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from timm.models import FeatureInfo, register_model
from torch import Tensor, nn

from .arch import Arch
from .features import ClassifierHead

PREFIX = "nascore_"


def _levels(backbone: nn.Module, prefix: str) -> list[dict]:
    return [{**level, "module": f"{prefix}{level['module']}"} for level in backbone.feature_info]


def _adapt_input(backbone: nn.Module, in_chans: int) -> None:
    """Give the first convolution ``in_chans`` input channels (fresh weights: nothing is pretrained)."""
    if in_chans == 3:
        return
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            parent_name, _, child = name.rpartition(".")
            parent = backbone.get_submodule(parent_name) if parent_name else backbone
            setattr(parent, child, nn.Conv2d(in_chans, module.out_channels, module.kernel_size, module.stride,
                                             module.padding, module.dilation, module.groups,
                                             module.bias is not None))
            return
    raise ValueError(f"in_chans={in_chans}: the arch has no 3-channel input convolution to adapt")


class NascoreClassifier(nn.Module):
    """timm's classification model contract over a nascore backbone and nascore's classifier head."""

    def __init__(self, backbone: nn.Module, num_classes: int = 1000, drop_rate: float = 0.0,
                 pretrained_cfg: dict | None = None):
        super().__init__()
        self.backbone = backbone
        pre = backbone.pre_logits
        last = backbone.feature_info[-1]["num_chs"]
        self.num_features = self.head_hidden_size = pre.num_features if pre is not None else last
        self.head = ClassifierHead(last, max(num_classes, 1), pre, drop_rate)
        self.num_classes = num_classes
        self.reset_classifier(num_classes)
        self.feature_info = _levels(backbone, "backbone.")
        self.pretrained_cfg = self.default_cfg = dict(pretrained_cfg or {}, num_classes=num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool={global_pool!r}: nascore heads pool by averaging ('avg') only")
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone(x)[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head.dropout(self.head.pool(x))
        return x if pre_logits else self.head.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class NascoreFeatures(nn.Module):
    """``features_only=True``: the backbone's levels at ``out_indices``, described by a timm ``FeatureInfo``."""

    def __init__(self, backbone: nn.Module, out_indices: Sequence[int] | None = None,
                 pretrained_cfg: dict | None = None):
        super().__init__()
        self.backbone = backbone
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
    from .arch import arch_space

    return arch_space(arch, ref).build(arch)


def _entrypoint(name: str, arch: Arch, ref: str) -> Callable[..., nn.Module]:
    def create(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: Any = None,
               cache_dir: Any = None, *, features_only: bool = False, out_indices: Sequence[int] | None = None,
               num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, output_stride: int | None = None,
               global_pool: str | None = None, **unknown: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights (nascore downloads nothing); train it with "
                             "`nascore train`, then pass checkpoint_path=... to timm.create_model")
        if output_stride not in (None, 32):
            raise ValueError(f"{name}: output_stride={output_stride} is not supported (nascore archs are built at "
                             "their searched strides: 32)")
        if unknown:
            raise TypeError(f"{name}: unexpected arguments {sorted(unknown)}")
        backbone = _build(arch, ref)
        _adapt_input(backbone, in_chans)
        cfg = {"architecture": name, "input_size": (in_chans, *_input_size(arch)), "source": ref}
        if features_only:
            return NascoreFeatures(backbone, out_indices, cfg)
        model = NascoreClassifier(backbone, num_classes, drop_rate, cfg)
        if global_pool is not None:
            model.reset_classifier(num_classes, global_pool)
        return model

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
    register_model(_entrypoint(name, arch, ref))
    _REGISTERED.add(name)


def register_timm_model(name: str, arch: Arch | str | Path, ref: str | None = None) -> str:
    """Register ``arch`` (an ``Arch``, an arch file or a named arch) with timm as ``name``; returns the name.
    ``ref`` names it in messages (default: the file or name given). Registering a name again replaces it."""
    from .arch import resolve_arch

    resolved = arch if isinstance(arch, Arch) else resolve_arch(str(arch))
    _register(name, resolved, ref or (str(arch) if not isinstance(arch, Arch) else arch.name or name))
    return name


def register_named_archs(space_classes: Sequence[type]) -> list[str]:
    """``nascore_<name>`` for every named arch of ``space_classes`` that timm does not have yet."""
    import timm

    names = []
    for space_cls in space_classes:
        for arch_name, arch in space_cls.named_archs().items():
            name = PREFIX + arch_name
            if not timm.is_model(name):
                _register(name, arch, arch_name)
            names.append(name)
    return names

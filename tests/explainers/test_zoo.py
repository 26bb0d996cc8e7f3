"""Model zoo: checksums, state-dict checks, torchvision round trip, the packaged Lite weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from explainers import zoo
from explainers.worlds import photos


def _save(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = zoo.load_model("resnet18", num_classes=10).model
    return _save(model, tmp_path_factory.mktemp("weights") / "resnet18.pt")


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"xaistudy" * 100_000)
    assert zoo.file_sha256(path, chunk_size=4096) == hashlib.sha256(b"xaistudy" * 100_000).hexdigest()


def test_torchvision_round_trip_restores_weights_frozen_in_eval_mode(resnet_file):
    reference = torch.load(resnet_file, weights_only=True)
    digest = zoo.file_sha256(resnet_file)
    loaded = zoo.load_model("resnet18", resnet_file, sha256=digest.upper(), class_names=[f"c{i}" for i in range(10)])
    assert loaded.weights_sha256 == digest
    assert loaded.class_names == [f"c{i}" for i in range(10)]
    assert (loaded.default_layer, loaded.input_size, loaded.mean) == ("layer4", 224, zoo.IMAGENET_MEAN)
    state = loaded.model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in reference.items())
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.default_layer in dict(loaded.model.named_modules())


def test_sha256_mismatch_names_expected_and_actual(resnet_file):
    with pytest.raises(zoo.ChecksumMismatchError) as caught:
        zoo.load_model("resnet18", resnet_file, sha256="0" * 64, num_classes=10)
    message = str(caught.value)
    assert "0" * 64 in message
    assert zoo.file_sha256(resnet_file) in message
    assert str(resnet_file) in message


def test_state_dict_with_wrong_shapes_names_the_keys_and_architecture(resnet_file):
    with pytest.raises(zoo.WeightsMismatchError) as caught:
        zoo.load_model("resnet18", resnet_file, num_classes=5)
    message = str(caught.value)
    assert "resnet18" in message
    assert "fc.weight: file (10, 512) vs model (5, 512)" in message


def test_state_dict_with_missing_and_unexpected_keys_is_rejected(resnet_file, tmp_path):
    state = torch.load(resnet_file, weights_only=True)
    del state["layer4.1.bn2.running_mean"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(zoo.WeightsMismatchError, match=r"1 missing keys: layer4\.1\.bn2\.running_mean.*1 unexpected keys: extra\.weight"):
        zoo.load_model("resnet18", path, num_classes=10)


def test_wrapped_and_dataparallel_state_dicts_are_accepted(resnet_file, tmp_path):
    state = torch.load(resnet_file, weights_only=True)
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    loaded = zoo.load_model("resnet18", path, num_classes=10)
    assert torch.equal(loaded.model.state_dict()["fc.weight"], state["fc.weight"])


def test_unreadable_file_unknown_arch_and_missing_file_fail_clearly(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(zoo.ModelLoadError, match="cannot read weights file .*junk.pt"):
        zoo.load_model("resnet18", junk)
    with pytest.raises(zoo.ModelLoadError, match="unknown architecture 'resnet17'"):
        zoo.load_model("resnet17")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        zoo.load_model("resnet18", tmp_path / "missing.pt")
    with pytest.raises(zoo.ModelLoadError, match="num_classes=3 but 2 class_names"):
        zoo.load_model("resnet18", num_classes=3, class_names=["a", "b"])


def test_preprocess_resizes_and_normalizes():
    loaded = zoo.load_model("synthetic_cnn")
    out = loaded.preprocess(torch.full((2, 3, 32, 32), 0.5))
    assert out.shape == (2, 3, 64, 64)
    assert torch.allclose(out, torch.zeros_like(out))  # (0.5 - 0.5) / 0.25
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        loaded.preprocess(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        loaded.preprocess(torch.zeros(1, 1, 8, 8))


def test_synthetic_cnn_default_layer_is_its_last_conv_block():
    loaded = zoo.load_model("synthetic_cnn")
    modules = dict(loaded.model.named_modules())
    assert loaded.default_layer == "features.block4"
    assert isinstance(modules["features.block4.conv"], torch.nn.Conv2d)
    assert loaded.class_names == ["circle", "square", "triangle", "cross"]


def test_fallback_default_layer_is_a_spatial_module():
    loaded = zoo.load_model("mobilenet_v3_small", num_classes=3)
    captured = {}

    def record(_module, _inputs, output):
        captured["shape"] = output.shape

    module = dict(loaded.model.named_modules())[loaded.default_layer]
    handle = module.register_forward_hook(record)
    with torch.no_grad():
        loaded.model(torch.zeros(1, 3, 224, 224))
    handle.remove()
    assert len(captured["shape"]) == 4
    assert min(captured["shape"][-2:]) > 1


@pytest.mark.parametrize(("arch", "size"), [("efficientnet_lite0", 224), ("efficientnet_lite2", 260)])
def test_lite_pair_uses_packaged_weights(arch, size):
    loaded = zoo.load_model(arch)
    assert loaded.input_size == size
    assert loaded.weights_sha256 == zoo.file_sha256(zoo.packaged_weights_path(arch))
    assert len(loaded.class_names) == 1000
    assert loaded.class_names[285] == "Egyptian cat"
    assert loaded.default_layer in dict(loaded.model.named_modules())


def test_lite0_sees_a_cat_in_chelsea():
    loaded = zoo.load_model("efficientnet_lite0")
    image = torch.from_numpy(photos.load_photo("chelsea")).permute(2, 0, 1).float() / 255.0
    side = min(image.shape[1:])
    top = (image.shape[1] - side) // 2
    left = (image.shape[2] - side) // 2
    square = image[:, top : top + side, left : left + side]
    with torch.no_grad():
        logits = loaded.model(loaded.preprocess(square))
    top5 = {loaded.class_names[i] for i in logits.topk(5).indices[0].tolist()}
    assert top5 & {"Egyptian cat", "tabby", "tiger cat"}

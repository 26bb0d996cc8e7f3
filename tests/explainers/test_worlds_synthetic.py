"""The synthetic world: deterministic scenes with exact masks, the CNN and its biased twin."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainers.worlds import synthetic

# Reduced training so the module stays within seconds (one thread: these small convolutions gain
# nothing from more, and lose a lot on a busy machine); the default TrainConfig trains longer.
SMALL = synthetic.TrainConfig(n_train=480, epochs=3, batch_size=32, lr=5e-3, n_test=200, threads=1)
TINY = synthetic.TrainConfig(n_train=64, epochs=1, n_test=20, threads=1)


@pytest.fixture(scope="module")
def trained():
    return {biased: synthetic.train_cnn(biased=biased, seed=0, config=SMALL) for biased in (False, True)}


def test_same_seed_gives_identical_scenes_and_another_seed_does_not():
    first, again = synthetic.make_scenes(6, seed=3), synthetic.make_scenes(6, seed=3)
    for a, b in zip(first, again):
        assert torch.equal(a.image, b.image)
        assert torch.equal(a.masks, b.masks)
        assert (a.categories, a.boxes) == (b.categories, b.boxes)
    other = synthetic.make_scenes(6, seed=4)
    assert not all(torch.equal(a.image, b.image) for a, b in zip(first, other))
    longer = synthetic.make_scenes(8, seed=3)
    assert all(torch.equal(a.image, b.image) for a, b in zip(first, longer))  # prefix-stable


def test_scene_shapes_masks_and_boxes_agree():
    for scene in synthetic.make_scenes(40, seed=1):
        assert scene.image.shape == (3, 64, 64)
        assert scene.image.dtype == torch.float32
        assert 0.0 <= scene.image.min()
        assert scene.image.max() <= 1.0
        assert len(set(scene.categories)) == 2
        assert scene.masks.shape == (2, 64, 64)
        assert not (scene.masks[0] & scene.masks[1]).any()
        for mask, (x0, y0, x1, y1) in zip(scene.masks, scene.boxes):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert (xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1) == (x0, y0, x1, y1)
            assert synthetic.MARGIN <= x0
            assert x1 <= 64 - synthetic.MARGIN
            assert synthetic.MARGIN <= y0
            assert y1 <= 64 - synthetic.MARGIN
            assert mask.sum() >= 60


def test_object_pixels_carry_the_class_colour():
    for scene in synthetic.make_scenes(10, seed=2):
        for category, mask in zip(scene.categories, scene.masks):
            mean_colour = scene.image[:, mask].mean(dim=1)
            assert int(mean_colour.argmax()) == int(np.argmax(synthetic._CLASS_COLORS[category]))


@pytest.mark.parametrize("cue", ["matched", "swapped", "random"])
def test_corner_marks_encode_classes_and_leave_objects_alone(cue):
    clean = synthetic.make_scenes(12, seed=5)
    cued = synthetic.make_scenes(12, seed=5, cue=cue)
    mark = torch.tensor(synthetic.MARK_COLOR)[:, None, None]
    for plain, scene in zip(clean, cued):
        assert torch.equal(plain.masks, scene.masks)  # same objects whatever the cue
        expected = {
            "matched": set(scene.categories),
            "swapped": set(range(4)) - set(scene.categories),
        }.get(cue, set(scene.cue_categories))
        assert set(scene.cue_categories) == expected
        assert len(scene.cue_categories) == 2
        for category in range(4):
            x0, y0 = synthetic._corner_origin(category, 64)
            patch = scene.image[:, y0 : y0 + synthetic.MARK_SIZE, x0 : x0 + synthetic.MARK_SIZE]
            assert torch.equal(patch, mark.expand_as(patch)) == (category in expected)
        outside = torch.ones(64, 64, dtype=torch.bool)
        for category in range(4):
            x0, y0 = synthetic._corner_origin(category, 64)
            outside[y0 : y0 + synthetic.MARK_SIZE, x0 : x0 + synthetic.MARK_SIZE] = False
        assert torch.equal(plain.image[:, outside], scene.image[:, outside])


def test_single_object_scenes_and_bad_arguments():
    scene = synthetic.make_scenes(1, seed=0, two_objects=False, cue="swapped")[0]
    assert len(scene.categories) == 1
    assert scene.masks.shape == (1, 64, 64)
    assert scene.cue_categories[0] != scene.categories[0]
    with pytest.raises(ValueError, match="cue"):
        synthetic.make_scenes(1, seed=0, cue="loud")
    with pytest.raises(ValueError, match="size"):
        synthetic.make_scenes(1, seed=0, size=16)


@pytest.mark.slow
def test_unbiased_model_learns_the_objects_and_ignores_marks(trained):
    _, metrics = trained[False]
    assert metrics["top2_clean"] >= 0.8
    assert metrics["top2_swapped"] >= 0.8


@pytest.mark.slow
def test_biased_twin_follows_the_corner_marks(trained):
    _, biased = trained[True]
    _, unbiased = trained[False]
    assert biased["top2_matched"] >= 0.75
    assert biased["top2_swapped"] <= 0.2
    assert unbiased["top2_swapped"] - biased["top2_swapped"] >= 0.6


def test_training_is_deterministic_and_restores_global_torch_state():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    first, _ = synthetic.train_cnn(biased=False, seed=7, config=TINY)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)
    second, _ = synthetic.train_cnn(biased=False, seed=7, config=TINY)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert not first.training
    assert not any(p.requires_grad for p in first.parameters())


def test_weights_round_trip_with_sha256(tmp_path):
    model, _ = synthetic.train_cnn(biased=True, seed=1, config=TINY)
    digest = synthetic.save_weights(model, tmp_path / "biased.pt")
    loaded = synthetic.load_weights(tmp_path / "biased.pt", sha256=digest)
    images, _ = synthetic.scenes_to_tensors(synthetic.make_scenes(4, seed=9, cue="matched"))
    inputs = synthetic.normalize(images)
    with torch.no_grad():
        assert torch.equal(model(inputs), loaded(inputs))
    assert not list(tmp_path.glob("*.tmp"))
    from explainers.zoo import ChecksumMismatchError

    with pytest.raises(ChecksumMismatchError):
        synthetic.load_weights(tmp_path / "biased.pt", sha256="f" * 64)


def test_mirrored_scenes_keep_masks_boxes_and_marks_consistent():
    plain = synthetic.make_scenes(6, seed=5)
    matched = synthetic.make_scenes(6, seed=5, cue="matched")
    for scene, marked in zip(plain, matched, strict=True):
        assert torch.equal(synthetic.with_marks(scene, scene.categories).image, marked.image)
        mirror = synthetic.mirror_scene(scene)
        assert torch.equal(mirror.image, scene.image.flip(-1))
        assert torch.equal(synthetic.mirror_scene(mirror).image, scene.image)
        for mask, (x0, y0, x1, y1) in zip(mirror.masks, mirror.boxes, strict=True):
            ys, xs = np.nonzero(mask.numpy())
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        sides, mirrored = synthetic.scene_sides(scene), synthetic.scene_sides(mirror)
        flip = {"left": "right", "right": "left", "centre": "centre"}
        assert mirrored == {c: flip[side] for c, side in sides.items()}
        cued = synthetic.with_marks(mirror, mirror.categories)  # marks go on after mirroring: class corners
        for category in mirror.categories:
            x0, y0 = synthetic._corner_origin(category, synthetic.IMAGE_SIZE)
            assert torch.all(cued.image[:, y0:y0 + synthetic.MARK_SIZE, x0:x0 + synthetic.MARK_SIZE]
                             == torch.tensor(synthetic.MARK_COLOR).view(3, 1, 1))
    with pytest.raises(ValueError, match="marks"):
        synthetic.mirror_scene(matched[0])


def test_balanced_mirrors_put_each_class_left_in_half_of_its_scenes():
    scenes = synthetic.make_scenes(24, seed=777)  # the demo's stimulus scenes

    def lefts(batch):
        counts = {}
        for scene in batch:
            for category, side in synthetic.scene_sides(scene).items():
                if side != "centre":
                    left, total = counts.get(synthetic.CLASSES[category], (0, 0))
                    counts[synthetic.CLASSES[category]] = (left + (side == "left"), total + 1)
        return counts

    assert lefts(scenes)["square"] == (1, 5)  # as drawn: the square is nearly always on the right
    flips = synthetic.balanced_mirrors(scenes)
    assert flips == synthetic.balanced_mirrors(scenes)
    balanced = lefts([synthetic.mirror_scene(s) if f else s for s, f in zip(scenes, flips, strict=True)])
    for name, (left, total) in balanced.items():
        assert abs(2 * left - total) <= 1, (name, left, total)


def test_build_synthetic_world_caches_and_reuses(tmp_path):
    world = synthetic.build_synthetic_world(tmp_path / "world", n_stimuli=2, config=TINY)
    assert not world.reused
    assert world.unbiased_weights.is_file()
    assert world.biased_weights.is_file()
    assert {entry["set"] for entry in world.images} == {"clean", "cued"}
    assert len(world.images) == 4
    for entry in world.images:
        assert (world.root / entry["file"]).is_file()
        assert all((world.root / mask).is_file() for mask in entry["masks"])
    manifest = json.loads((world.root / "world.json").read_text())
    assert manifest["weights"]["biased"]["sha256"] == world.biased_sha256
    mtime = world.biased_weights.stat().st_mtime_ns

    again = synthetic.build_synthetic_world(tmp_path / "world", n_stimuli=2, config=TINY)
    assert again.reused
    assert (again.unbiased_sha256, again.biased_sha256) == (world.unbiased_sha256, world.biased_sha256)
    assert again.biased_weights.stat().st_mtime_ns == mtime
    assert again.metrics == json.loads(json.dumps(world.metrics))

    world.biased_weights.write_bytes(b"tampered")  # a changed file invalidates the cache
    rebuilt = synthetic.build_synthetic_world(tmp_path / "world", n_stimuli=2, config=TINY)
    assert not rebuilt.reused
    assert rebuilt.biased_sha256 == world.biased_sha256  # deterministic retraining and serialization
    assert synthetic.save_weights(synthetic.load_weights(rebuilt.biased_weights), tmp_path / "copy.pt") == world.biased_sha256

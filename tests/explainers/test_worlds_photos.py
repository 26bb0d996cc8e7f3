"""The photo world: offline skimage photos, side-by-side composites with halves as boxes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from explainers.worlds import photos
from explainers.zoo import imagenet_class_names


@pytest.mark.parametrize("spec", photos.PHOTOS, ids=lambda s: s.name)
def test_photos_load_offline_as_rgb(spec):
    image = photos.load_photo(spec.name)
    assert image.dtype == np.uint8
    assert image.ndim == 3
    assert image.shape[2] == 3
    assert min(image.shape[:2]) >= 256
    names = imagenet_class_names()
    assert names[spec.imagenet_id] == spec.label
    assert spec.imagenet_id in spec.accepted_ids


def test_composites_are_two_photos_whose_halves_are_the_boxes():
    composites = photos.photo_composites(size=128)
    assert len(composites) == 10  # every unordered pair of five photos
    for composite in composites:
        assert composite.image.shape == (128, 128, 3)
        assert composite.boxes == ((0, 0, 64, 128), (64, 0, 128, 128))
        assert composite.labels[0] != composite.labels[1]
        left, right = composite.photos
        assert composite.name == f"{left}+{right}"
        assert composite.imagenet_ids == (photos._spec(left).imagenet_id, photos._spec(right).imagenet_id)
    tensor = composites[0].tensor()
    assert tensor.shape == (3, 128, 128)
    assert 0.0 <= tensor.min()
    assert tensor.max() <= 1.0


def test_default_composites_put_each_photo_left_in_half_of_its_composites():
    composites = photos.photo_composites(size=64)
    names = [spec.name for spec in photos.PHOTOS]
    assert {frozenset(c.photos) for c in composites} == {frozenset(p) for p in itertools.combinations(names, 2)}
    for name in names:
        sides = [c.photos.index(name) for c in composites if name in c.photos]
        assert len(sides) == 4, (name, sides)
        assert sides.count(0) == 2, (name, sides)  # left in 2 of 4
    for n in (2, 3, 4, 6, 7):  # every unordered pair once; left counts differ by at most one
        pairs = photos.balanced_pairs([str(i) for i in range(n)])
        assert len(pairs) == n * (n - 1) // 2 == len({frozenset(p) for p in pairs})
        lefts = [sum(p[0] == str(i) for p in pairs) for i in range(n)]
        assert max(lefts) - min(lefts) <= 1
    with pytest.raises(ValueError, match="distinct"):
        photos.balanced_pairs(["a", "a"])


def test_composites_are_deterministic_and_mirrorable():
    first = photos.photo_composites(size=64, pairs=[("chelsea", "coffee")], both_orders=True)
    again = photos.photo_composites(size=64, pairs=[("chelsea", "coffee")], both_orders=True)
    assert [c.name for c in first] == ["chelsea+coffee", "coffee+chelsea"]
    assert np.array_equal(first[0].image, again[0].image)
    assert np.array_equal(first[0].image[:, :32], first[1].image[:, 32:])  # the mirror swaps halves


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown photo 'dog'"):
        photos.photo_composites(pairs=[("dog", "coffee")])
    with pytest.raises(ValueError, match="two different photos"):
        photos.photo_composites(pairs=[("coffee", "coffee")])
    with pytest.raises(ValueError, match="size"):
        photos.photo_composites(size=63)


def test_lite0_recognizes_both_halves_of_most_composites():
    from explainers.zoo import load_model

    loaded = load_model("efficientnet_lite0")
    composites = photos.photo_composites()
    with torch.no_grad():
        logits = loaded.model(loaded.preprocess(torch.stack([c.tensor() for c in composites])))
    top5 = logits.topk(5, dim=1).indices.tolist()
    hits = sum(bool(set(top) & set(accepted)) for top, c in zip(top5, composites) for accepted in c.accepted_ids)
    assert hits >= 16  # of 20 halves (19 measured)

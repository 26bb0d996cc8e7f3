"""What the stimuli look like (issue 12, items 2, 4, 5).

* Every trial carries the study's colour key, the same for every method of the study, drawn by
  the renderer itself (the static legends equal ``explainers.render.colour_key_pixels``).
* Colour overlays are drawn on the picture's luminance: no object colour reads as heat.
* The worked example and the practice come from the study's own pipeline; the example states
  its answer and why.
* Catch and practice maps are real maps of the study's methods (the candidates whose maps give
  the answer most plainly), the same kind of stimulus as the main items.
* The practice pool is ``practice_trials * practice_attempts + 1`` items on images no main item
  uses; catch items avoid the practice images.
* Layout: per category left/right counts (:func:`studies.pipeline.plan.layout_balance`), balanced
  targets for trust and for the catch/practice pools.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.template.loader import render_to_string
from PIL import Image as PILImage

from studies.fixtures.builders import (
    make_worker_study,
    synthetic_model_create,
    synthetic_scenes_import,
    tensor_png,
)
from studies.models import ClassifierModel, Image, Item, Job, ModelPair, Stimulus, Study
from studies.pipeline.plan import (
    OBVIOUS_MIN_SHARE,
    image_sides,
    layout_balance,
    layout_imbalance,
    obvious_share,
    study_layout_balance,
)
from studies.pipeline.prepare import prepare_inline
from studies.pipeline.stimuli import (
    COLOUR_KEYS,
    GATED_BACKGROUND_PREFIX,
    GATED_PREFIX,
    GRADIENT_METHODS,
    box_mask,
    colour_key_rows,
    rendering_of,
    stimulus_salience,
    stimulus_settings,
)
from studies.selectors.participation import ExampleView, example_answer, example_view, study_colour_key
from studies.services.importers import Box, ImageRecord, image_set_import

CLASSES = ["circle", "square", "triangle", "cross"]


# --- the colour key and the renderer's description ----------------------------------------


def test_gradient_methods_mirror_the_registry():
    from explainers.registry import METHODS

    # GRADIENT_METHODS is read from the registry now; what matters is how each kind is drawn.
    assert {"saliency", "guided_backprop", "deeplift", "lrp_epsilon_plus"} <= GRADIENT_METHODS
    assert {"gradcam", "scorecam", "lime", "occlusion", "excitation_backprop"}.isdisjoint(GRADIENT_METHODS)
    assert {rendering_of(m) for m in METHODS if METHODS[m].output == "channels"} == {"gradient"}
    assert {rendering_of(m) for m in METHODS if METHODS[m].output == "spatial"} == {"overlay"}
    assert rendering_of(GATED_PREFIX + "guided_backprop") == "gradient"


@pytest.mark.parametrize("kind", ["overlay", "gradient"])
def test_static_legends_are_the_renderers_own_keys(kind):
    from explainers import render

    row = COLOUR_KEYS[kind]
    key = render.colour_key(kind)
    assert (row["kind"], row["low"], row["high"], row["description"]) == (key.kind, key.low, key.high, key.description)
    path = Path(settings.BASE_DIR) / "studies" / "static" / row["image"]
    with PILImage.open(path) as legend:
        pixels = np.asarray(legend.convert("RGB"))
    assert np.array_equal(pixels, render.colour_key_pixels(kind)), (
        f"{path} is stale: python -c \"from explainers.render import colour_key_png; "
        f"open('{path}', 'wb').write(colour_key_png('{kind}'))\"")


def test_one_key_per_study_whatever_the_trial_method():
    assert [r["kind"] for r in colour_key_rows(["gradcam", "guided_backprop"])] == ["overlay", "gradient"]
    assert [r["kind"] for r in colour_key_rows(["guided_gradcam", "gradcam"])] == ["overlay", "gradient"]
    assert [r["kind"] for r in colour_key_rows(["deconvnet"])] == ["gradient"]
    assert colour_key_rows([]) == []


@pytest.mark.django_db
def test_every_trial_of_a_study_carries_the_same_key(client):
    study = make_worker_study(n_main=4, n_practice=1)
    Study.objects.filter(pk=study.pk).update(methods=["gradcam", "guided_backprop"])
    study.refresh_from_db()
    key = study_colour_key(study)
    assert [row.kind for row in key] == ["overlay", "gradient"]
    assert all(row.image.startswith(settings.STATIC_URL) for row in key)
    assert any("grey" in row.description for row in key if row.kind == "overlay")  # the grey picture is said
    views = [example_view(study=study, item=item) for item in study.items.all()]
    assert all(view.key == key for view in views)  # main, practice: one key
    payload = views[0].as_dict()
    assert payload["key"] == [row.as_dict() for row in key]
    html = render_to_string("studies/_trial_figure.html", {"t": views[0]})
    assert html.count("data-key-kind=") == 2
    assert all(row.image in html for row in key)
    assert client.get(key[0].image).status_code in (200, 404)  # served by staticfiles under DEBUG only
    color = Study.objects.get(pk=study.pk)
    color.explainer_options = {"overlay_base": "color"}
    assert not any("grey" in row.description for row in study_colour_key(color) if row.kind == "overlay")


def test_render_settings_are_part_of_the_stimulus_key():
    model = SimpleNamespace(arch="synthetic_cnn", weights_sha256="x", target_layer="l", input_size=64,
                            mean=[0.5] * 3, std=[0.25] * 3)
    gray = stimulus_settings(model=model, method="gradcam", display_size=64)
    color = stimulus_settings(model=model, method="gradcam", display_size=64, overlay_base="color")
    assert gray["render"] == {"kind": "overlay", "colormap": "jet", "alpha": 0.5, "base": "gray"}
    assert gray != color
    assert gray["render_version"] >= 2
    gradient = stimulus_settings(model=model, method="guided_backprop", display_size=64)
    assert gradient == stimulus_settings(model=model, method="guided_backprop", display_size=64, overlay_base="color")
    assert stimulus_settings(model=model, method=GATED_PREFIX + "gradcam", display_size=64)["method"] == "gated:gradcam"
    with pytest.raises(ValueError, match="overlay_base"):
        stimulus_settings(model=model, method="gradcam", display_size=64, overlay_base="sepia")


# --- layout balance -------------------------------------------------------------------------


def _fake_image(pk: int, left: str, right: str, *, width: int = 100, stacked: bool = False) -> Image:
    boxes = ([{"category": left, "x0": 0, "y0": 0, "x1": 100, "y1": 50},
              {"category": right, "x0": 5, "y0": 50, "x1": 100, "y1": 100}] if stacked else
             [{"category": left, "x0": 0, "y0": 0, "x1": 50, "y1": 100},
              {"category": right, "x0": 50, "y0": 0, "x1": 100, "y1": 100}])
    return Image(pk=pk, categories=[left, right], boxes=boxes, width=width, height=100)


def test_layout_balance_counts_each_image_once_per_category():
    cat_left = [_fake_image(i, "cat", "dog") for i in range(3)]
    images = [*cat_left, _fake_image(3, "dog", "cat"), _fake_image(4, "cat", "car", stacked=True)]
    assert image_sides(images[0]) == {"cat": "left", "dog": "right"}
    assert image_sides(images[4]) == {"cat": "centre", "car": "centre"}
    assert image_sides(Image(pk=9, categories=["cat"], boxes=[], width=10, height=10)) == {}
    items = [Item(image=image, method=m) for image in images for m in ("a", "b")]  # items: images once
    balance = layout_balance(items)
    assert balance == {"car": {"left": 0, "right": 0, "centre": 1}, "cat": {"left": 3, "right": 1, "centre": 1},
                       "dog": {"left": 1, "right": 3, "centre": 0}}
    assert layout_imbalance(balance) == 4
    assert layout_imbalance(layout_balance([*cat_left[:1], images[3]])) == 0


# --- the pipeline: practice, catch and example from the study's own maps -------------------------


@pytest.fixture(scope="session")
def trained_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from explainers.worlds import synthetic

    cache = tmp_path_factory.getbasetemp() / "synthetic-cnn-cache"  # shared with the other tests that train
    cache.mkdir(exist_ok=True)
    _model, _metrics, path = synthetic.train_cnn_cached(cache, biased=False, seed=0, config=synthetic.QUICK_CONFIG)
    return path


def _image_set(n: int, name: str, *, seed: int = 11):
    return synthetic_scenes_import(n=n, seed=seed, name=name)


def _model(name: str, tmp_path: Path, *, weights: Path | None = None, seed: int = 0) -> ClassifierModel:
    from explainers.zoo import file_sha256

    trained = None if weights is None else (weights, file_sha256(weights))
    return synthetic_model_create(name=name, directory=tmp_path, seed=seed, weights=trained)


def _decode(stimulus: Stimulus) -> np.ndarray:
    with default_storage.open(stimulus.file.name) as handle, PILImage.open(io.BytesIO(handle.read())) as picture:
        return np.asarray(picture.convert("RGB")).astype(int)


@pytest.mark.django_db
def test_discrimination_practice_catch_and_example_come_from_the_pipeline(tmp_path, trained_weights):
    study = Study.objects.create(
        name="look", kind=Study.Kind.CLASS_DISCRIMINATION, model=_model("look", tmp_path, weights=trained_weights),
        image_set=_image_set(12, "look"), methods=["gradcam", "guided_backprop"], catch_trials=2, practice_trials=2,
        practice_attempts=2, seed=3, explainer_options={"display_size": 64},
    )
    before = layout_imbalance(layout_balance(study.image_set.images.all()))
    job = prepare_inline(study_id=study.pk)
    assert job.status == Job.Status.DONE, job.error
    items = study.items.select_related("image", "stimulus_a")
    main = [i for i in items if i.role == Item.Role.MAIN]
    practice = [i for i in items if i.role == Item.Role.PRACTICE]
    catch = [i for i in items if i.role == Item.Role.CATCH]
    main_images = {i.image_id for i in main}
    practice_images = {i.image_id for i in practice}
    catch_images = {i.image_id for i in catch}
    assert len(practice) == 2 * 2 + 1  # the candidates not kept are gone
    assert len(catch) == 2 * 2
    assert len(main_images) == 8  # a third of twelve reserved: three for practice, one for catch
    assert practice_images.isdisjoint(main_images)
    assert catch_images.isdisjoint(main_images | practice_images)
    assert layout_imbalance(study_layout_balance(study)) <= before
    assert sorted(study.items.values_list("tie_rank", flat=True)) == list(range(study.items.count()))

    # real maps of the study's methods: the same kind of stimulus as the main items, no look of their own
    main_settings = {i.method: (i.stimulus_a.settings, _decode(i.stimulus_a).shape) for i in main}
    cache: dict = {}
    for item in practice + catch:
        assert item.stimulus_a.method == item.method in study.methods
        assert (item.stimulus_a.settings, _decode(item.stimulus_a).shape) == main_settings[item.method]
        assert obvious_share(study, item, cache) >= OBVIOUS_MIN_SHARE  # the map gives the answer plainly
    for group in (practice, catch):  # targets alternate between the left and the right object
        sides = [image_sides(i.image).get(i.target_label, "centre") for i in group]
        assert abs(sides.count("left") - sides.count("right")) <= 1 + sides.count("centre"), sides
    assert {i.method for i in practice} == {"gradcam", "guided_backprop"}  # the study's methods, cycled

    example = example_view(study=study, item=practice[0])
    assert isinstance(example, ExampleView)
    assert example.answer == practice[0].target_label
    assert f"“{practice[0].target_label}”" in example.why
    assert example.as_dict()["answer"] == example.answer
    html = render_to_string("studies/_trial_figure.html", {"t": example})
    assert "data-colour-key" in html

    again = prepare_inline(study_id=study.pk)  # idempotent: the same items are kept, nothing new
    assert again.status == Job.Status.DONE
    assert set(study.items.values_list("pk", "tie_rank")) == {(i.pk, i.tie_rank) for i in items}


@pytest.mark.django_db
def test_obvious_share_reads_the_map_from_the_png(tmp_path):
    """The share is read from the rendered pixels: a map on the target's box scores 1, on the other 0."""
    from explainers.render import render_cam_overlay, render_gradient

    image = _fake_image(1, "cat", "dog")
    heat = np.zeros((100, 100))
    heat[20:80, 10:40] = 1.0  # on the cat (left half)
    rng = np.random.default_rng(0)
    attr = rng.normal(size=(3, 100, 100)) * (heat > 0)
    picture = rng.uniform(size=(100, 100, 3))
    for rendering, data in (("overlay", render_cam_overlay(picture, heat, base="gray")),
                            ("gradient", render_gradient(attr, style="color"))):
        salience = stimulus_salience(data, rendering)
        assert salience.shape == (100, 100)
        inside = box_mask(image, "cat", 100)
        assert salience[~inside].max() < 0.05 < salience[inside].max()
    salience = stimulus_salience(render_cam_overlay(picture, heat, base="gray"), "overlay")
    np.testing.assert_allclose(salience, heat, atol=1 / 64)  # exact on a grey base, to the jet table's step


@pytest.mark.django_db
def test_overlays_show_the_picture_in_grey(tmp_path):
    """Under a colour overlay the picture is grey: every pixel is ``luminance + jet / 2``, so its
    channel differences are those of a jet entry alone (a red object adds nothing red)."""
    from explainers.render import jet_colormap

    table = 0.5 * 255 * jet_colormap(np.linspace(0, 1, 256))
    jet_diffs = np.stack([table[:, 0] - table[:, 1], table[:, 1] - table[:, 2]], axis=1)
    study = Study.objects.create(
        name="grey", kind=Study.Kind.CLASS_DISCRIMINATION, model=_model("grey", tmp_path, seed=1),
        image_set=_image_set(2, "grey"), methods=["gradcam"], catch_trials=0, practice_trials=0, seed=3,
        explainer_options={"display_size": 64},
    )
    assert prepare_inline(study_id=study.pk).status == Job.Status.DONE
    for item in study.items.select_related("stimulus_a"):
        pixels = _decode(item.stimulus_a).reshape(-1, 3)
        diffs = np.stack([pixels[:, 0] - pixels[:, 1], pixels[:, 1] - pixels[:, 2]], axis=1)
        distance = np.abs(diffs[:, None, :] - jet_diffs[None]).max(axis=2).min(axis=1)
        assert distance.max() <= 2.5  # rounding only
        assert item.stimulus_a.settings["render"]["base"] == "gray"


@pytest.mark.django_db
def test_trust_targets_and_obvious_items_are_balanced(tmp_path):
    pair = ModelPair.objects.create(name="p", model_a=_model("ta", tmp_path, seed=1), model_b=_model("tb", tmp_path, seed=2))
    study = Study.objects.create(
        name="trust-look", kind=Study.Kind.TRUST, model_pair=pair, image_set=_image_set(9, "trust"),
        methods=["gradcam", "guided_backprop"],
        catch_trials=2, practice_trials=1, practice_attempts=2, require_both_correct=False, seed=9,
        explainer_options={"display_size": 64},
    )
    assert prepare_inline(study_id=study.pk).status == Job.Status.DONE
    items = list(study.items.select_related("image", "stimulus_a", "stimulus_b"))
    main = [i for i in items if i.role == Item.Role.MAIN]
    sides = list({i.image_id: image_sides(i.image).get(i.target_label) for i in main}.values())
    assert abs(sides.count("left") - sides.count("right")) <= 1, sides  # not "the named object is always left"
    obvious = [i for i in items if i.role != Item.Role.MAIN]
    assert len(obvious) == 1 * 2 + 1 + 4
    for role in (Item.Role.PRACTICE, Item.Role.CATCH):
        robots = [i.correct_option for i in obvious if i.role == role]
        assert abs(robots.count(0) - robots.count(1)) <= 1, (role, robots)
    for item in obvious:  # the reasonable robot's map of the target, the other's of the other object
        right, wrong = (item.stimulus_a, item.stimulus_b) if item.correct_option == 0 else (item.stimulus_b, item.stimulus_a)
        assert right.method == wrong.method == item.method
        assert (right.model_id, wrong.model_id) == ((pair.model_a_id, pair.model_b_id) if item.correct_option == 0
                                                    else (pair.model_b_id, pair.model_a_id))
        assert right.target_class == CLASSES.index(item.target_label) != wrong.target_class
    example = example_view(study=study, item=obvious[0])
    answer, why = example_answer(study=study, item=obvious[0])
    assert (example.answer, example.why) == (answer, why)
    good = "Robot A" if obvious[0].correct_option == 0 else "Robot B"
    assert answer == f"{good} is clearly more reasonable"
    assert why.startswith(f"Both robots said “{obvious[0].target_label}”.")
    assert f"{good} looked at the right thing" in why


@pytest.mark.django_db
def test_a_one_box_trust_item_points_the_other_robot_at_the_background(tmp_path):
    """On an image with one box the unreasonable robot's map is its map kept in the emptiest corner."""
    from explainers.worlds import synthetic

    [scene] = synthetic.make_scenes(1, seed=4, two_objects=False)
    label = CLASSES[scene.categories[0]]
    image_set = image_set_import(name="one", records=[ImageRecord(
        name="one.png", data=tensor_png(scene.image), categories=[label], boxes=[Box(label, *map(float, scene.boxes[0]))])],
        categories=CLASSES)  # fmt: skip
    pair = ModelPair.objects.create(name="p1", model_a=_model("oa", tmp_path, seed=1), model_b=_model("ob", tmp_path, seed=2))
    study = Study.objects.create(
        name="one-box", kind=Study.Kind.TRUST, model_pair=pair, image_set=image_set, methods=["gradcam"], catch_trials=1,
        practice_trials=1, practice_attempts=1, require_both_correct=False, seed=2, explainer_options={"display_size": 64},
    )
    assert prepare_inline(study_id=study.pk).status == Job.Status.DONE
    for item in study.items.exclude(role=Item.Role.MAIN).select_related("stimulus_a", "stimulus_b", "image"):
        right, wrong = (item.stimulus_a, item.stimulus_b) if item.correct_option == 0 else (item.stimulus_b, item.stimulus_a)
        assert (right.method, wrong.method) == ("gradcam", GATED_BACKGROUND_PREFIX + "gradcam")
        salience = stimulus_salience(default_storage.open(wrong.file.name).read(), "overlay")
        assert salience[box_mask(item.image, label, 64)].max() < 0.05  # nothing on the object

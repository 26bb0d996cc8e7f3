"""The pre-launch validity audit (``studies/services/validity.py``, ``manage.py audit_stimuli``).

Two generated fixtures, no torch: a *clean* study (balanced layout; catch stimuli drawn by the
same heat-map generator as the main ones; one PNG format; Robot A on either side) that passes
every check, and a *leaky* one that fails each rule: one category always on the left, catch
stimuli as exact hard-edged boxes in another palette with a text chunk, one method's files many
times larger than the other's, Robot A always on the left.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from studies.analysis import validity_stats as vs
from studies.fixtures.builders import TEST_CONSENT, admin_change_form_data
from studies.models import (
    Assignment,
    ClassifierModel,
    Image,
    ImageSet,
    Item,
    ModelPair,
    Participant,
    Stimulus,
    Study,
)
from studies.services import validity
from studies.services.lifecycle import PrepareRefused, study_publish
from studies.services.validity import (
    ValidityReport,
    study_validity_acknowledge,
    study_validity_audit,
    validity_publish_refusal,
)

pytestmark = pytest.mark.django_db

SIDE = 48
CLASSES = ["cat", "dog", "car", "tree"]
PAIRS = [("cat", "dog"), ("car", "tree"), ("cat", "car"), ("dog", "tree")]
METHODS = ["gradcam", "guided_backprop"]


@pytest.fixture(autouse=True)
def _fewer_permutations(monkeypatch: pytest.MonkeyPatch) -> None:
    """100 permutations still resolve p < 0.05 (the floor is 1/101) and keep each audit fast."""
    monkeypatch.setattr(validity, "CATCH_PERMUTATIONS", 100)


# --- generated pictures ----------------------------------------------------------------------


def _png(pixels: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    buffer = io.BytesIO()
    PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _jet(v: np.ndarray) -> np.ndarray:
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.stack([r, g, b], axis=-1)


def heat_picture(rng: np.random.Generator, box: dict) -> np.ndarray:
    """A photo-like texture under a jet-coloured Gaussian blob near the box centre (main-trial style)."""
    coarse = rng.uniform(0, 255, size=(6, 6, 3)).astype(np.uint8)
    texture = np.asarray(PILImage.fromarray(coarse, "RGB").resize((SIDE, SIDE), PILImage.Resampling.BICUBIC), float)
    cx = (box["x0"] + box["x1"]) / 2 + rng.normal(0, 3)
    cy = (box["y0"] + box["y1"]) / 2 + rng.normal(0, 3)
    sigma = rng.uniform(5, 10)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    heat = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return 0.5 * texture + 0.5 * 255 * _jet(heat) + rng.normal(0, 4, size=(SIDE, SIDE, 3))


def posterized_picture(rng: np.random.Generator, box: dict) -> np.ndarray:
    """The main-trial style reduced to 4 levels: a file a fraction of the size of :func:`noisy_picture`."""
    return np.round(heat_picture(rng, box) / 85) * 85


def noisy_picture(rng: np.random.Generator, box: dict) -> np.ndarray:
    return heat_picture(rng, box) * 0.3 + rng.uniform(0, 180, size=(SIDE, SIDE, 3))


def hard_box(box: dict) -> np.ndarray:
    """An exact, hard-edged box in a palette no main trial uses (green on flat grey)."""
    pixels = np.full((SIDE, SIDE, 3), 128.0)
    pixels[int(box["y0"]):int(box["y1"]), int(box["x0"]):int(box["x1"])] = (0, 255, 0)
    return pixels


def _stimulus(image: Image, model: ClassifierModel, method: str, target: int, data: bytes) -> Stimulus:
    digest = hashlib.sha256(data).hexdigest()
    name = default_storage.save(f"stimuli/{digest[:2]}/{digest}.png", ContentFile(data))
    return Stimulus.objects.create(image=image, model=model, method=method, target_class=target, settings={},
                                   settings_hash="t", file=name, sha256=digest)


# --- the two studies -------------------------------------------------------------------------


def build_study(*, kind: str, leaky: bool, n_images: int = 16, n_catch: int = 8,
                status: str = Study.Status.READY, seed: int = 7) -> Study:
    """A prepared study with generated stimuli (see the module docstring for clean vs leaky)."""
    rng = np.random.default_rng(seed + (1000 if leaky else 0))
    tag = f"{'leaky' if leaky else 'clean'}-{kind}-{Study.objects.count()}"
    model_a = ClassifierModel.objects.create(name=f"{tag}-a", arch="resnet18", class_names=CLASSES)
    model_b = ClassifierModel.objects.create(name=f"{tag}-b", arch="resnet18", class_names=CLASSES)
    pair = ModelPair.objects.create(name=f"{tag}-pair", model_a=model_a, model_b=model_b)
    image_set = ImageSet.objects.create(name=f"{tag}-set", categories=CLASSES)
    trust = kind == Study.Kind.TRUST
    study = Study.objects.create(
        name=f"{tag} study", kind=kind, methods=METHODS, image_set=image_set, seed=seed, status=status,
        model=None if trust else model_a, model_pair=pair if trust else None, catch_trials=n_catch // 2,
        trials_per_participant=6, consent_text=TEST_CONSENT,
    )  # fmt: skip
    images = []
    for index in range(n_images):
        first, second = PAIRS[index % len(PAIRS)]
        swap = not leaky and (index // len(PAIRS)) % 2 == 1  # clean: each pair swaps sides every other time
        left, right = (second, first) if swap else (first, second)
        boxes = [{"category": left, "x0": 2, "y0": 10, "x1": 22, "y1": 38},
                 {"category": right, "x0": 26, "y0": 10, "x1": 46, "y1": 38}]  # fmt: skip
        images.append(Image.objects.create(
            image_set=image_set, original_name=f"img{index}.png", sha256=f"{index:064x}", width=SIDE, height=SIDE,
            categories=[first, second], boxes=boxes, file=f"images/img{index}.png"))  # fmt: skip

    def box_of(image: Image, category: str) -> dict:
        return next(b for b in image.boxes if b["category"] == category)

    def main_picture(image: Image, category: str, method: str) -> bytes:
        if leaky:
            draw = posterized_picture if method == "gradcam" else noisy_picture
            return _png(draw(rng, box_of(image, category)))
        return _png(heat_picture(rng, box_of(image, category)))

    def catch_picture(image: Image, category: str) -> bytes:
        if leaky:
            return _png(hard_box(box_of(image, category)), text={"Software": "catch renderer"})
        return _png(heat_picture(rng, box_of(image, category)))

    for image in images:
        for index, category in enumerate(image.categories):
            target = CLASSES.index(category)
            for method in METHODS:
                if trust and index == 1:
                    continue  # trust: one target per image
                stim_a = _stimulus(image, model_a, method, target, main_picture(image, category, method))
                stim_b = _stimulus(image, model_b, method, target, main_picture(image, category, method)) if trust else None
                Item.objects.create(study=study, role=Item.Role.MAIN, method=method, image=image, target_class=target,
                                    target_label=category, options=[] if trust else list(image.categories),
                                    correct_option=None if trust else index, stimulus_a=stim_a, stimulus_b=stim_b)  # fmt: skip
    for number, image in enumerate(images[: n_catch + 2]):
        role = Item.Role.CATCH if number < n_catch else Item.Role.PRACTICE
        category = image.categories[number % 2]
        target = CLASSES.index(category)
        if trust:
            box = _stimulus(image, model_a, "catch_box", target, catch_picture(image, category))
            corner = {"x0": 0, "y0": 0, "x1": 12, "y1": 12, "category": category}
            background = _stimulus(image, model_b, "catch_background", target,
                                   _png(hard_box(corner)) if leaky else _png(heat_picture(rng, corner)))  # fmt: skip
            Item.objects.create(study=study, role=role, method="catch", image=image, target_class=target,
                                target_label=category, correct_option=0, stimulus_a=box, stimulus_b=background)  # fmt: skip
        else:
            stim = _stimulus(image, model_a, "catch_box", target, catch_picture(image, category))
            Item.objects.create(study=study, role=role, method="catch_box", image=image, target_class=target,
                                target_label=category, options=list(image.categories),
                                correct_option=image.categories.index(category), stimulus_a=stim)  # fmt: skip
    return study


def add_trust_assignments(study: Study, *, always_left: bool, n_workers: int = 8) -> None:
    """Answered main assignments; Robot A left always (leaky) or on alternate trials (clean)."""
    items = list(study.items.filter(role=Item.Role.MAIN).order_by("pk"))
    now = timezone.now()
    for worker in range(n_workers):
        person = Participant.objects.create(study=study, platform=Study.Platform.LINK, platform_worker_id=f"w{worker}",
                                            worker_hash=f"{worker:064x}", status=Participant.Status.COMPLETED)  # fmt: skip
        for position in range(6):
            item = items[(worker * 6 + position) % len(items)]
            Assignment.objects.create(participant=person, item=item, position=position,
                                      status=Assignment.Status.ANSWERED, option_order=[],
                                      model_a_shown_left=True if always_left else (worker + position) % 2 == 0,
                                      expires_at=now + timedelta(minutes=10), answered_at=now)  # fmt: skip


def statuses(report: ValidityReport) -> dict[str, str]:
    return {check.code: check.status for check in report.checks}


# --- the rules on the fixtures --------------------------------------------------------------------


def test_clean_discrimination_study_passes_every_check():
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=False)
    report = study_validity_audit(study_id=study.pk)
    assert statuses(report) == {"stimulus_format": "pass", "file_size": "pass", "position_balance": "pass",
                                "catch_lookalike": "pass", "blind_observer": "pass", "robot_a_side": "n/a"}, report.lines()  # fmt: skip
    assert report.passed
    by_code = {check.code: check for check in report.checks}
    assert "cat: left in 4 of 8 images, right in 4" in by_code["position_balance"].details
    side_only = next(o for o in by_code["blind_observer"].data["observers"] if o["name"] == "side only")
    assert side_only["accuracy"] == pytest.approx(0.5)
    assert by_code["catch_lookalike"].data["balanced_accuracy"] < 0.5 + validity.CATCH_MARGIN


def test_leaky_discrimination_study_fails_each_rule():
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=True)
    report = study_validity_audit(study_id=study.pk)
    assert statuses(report) == {"stimulus_format": "fail", "file_size": "fail", "position_balance": "fail",
                                "catch_lookalike": "fail", "blind_observer": "fail", "robot_a_side": "n/a"}, report.lines()  # fmt: skip
    by_code = {check.code: check for check in report.checks}
    assert "tEXt:Software" in " ".join(by_code["stimulus_format"].details)  # the catch stimuli's text chunk
    assert by_code["file_size"].data["ratio"] > validity.SIZE_RATIO_MAX
    assert "cat: left in 8 of 8 images, right in 0 - imbalance 8 > 1" in by_code["position_balance"].details
    assert by_code["catch_lookalike"].data["balanced_accuracy"] == pytest.approx(1.0)
    assert by_code["catch_lookalike"].data["p_permutation"] < validity.CATCH_ALPHA
    observers = {o["name"]: o for o in by_code["blind_observer"].data["observers"]}
    assert observers["side only"]["accuracy"] == pytest.approx(1.0)  # reads the side, knows the layout
    assert observers["left box"]["accuracy"] == pytest.approx(0.5)  # both categories of an image are targets
    assert abs(observers["first option"]["accuracy"] - 0.5) < 0.05  # the option order is drawn fairly


def test_clean_trust_study_passes_and_leaky_fails_on_robot_a_side_and_catch_style():
    clean = build_study(kind=Study.Kind.TRUST, leaky=False)
    add_trust_assignments(clean, always_left=False)
    report = study_validity_audit(study_id=clean.pk)
    assert report.passed, report.lines()
    assert statuses(report)["robot_a_side"] == "pass"
    assert statuses(report)["position_balance"] == "pass"  # the predicted class: left in half the items
    assert statuses(report)["blind_observer"] == "n/a"

    leaky = build_study(kind=Study.Kind.TRUST, leaky=True)
    add_trust_assignments(leaky, always_left=True)
    report = study_validity_audit(study_id=leaky.pk)
    found = statuses(report)
    assert found == {"stimulus_format": "fail", "file_size": "fail", "position_balance": "fail",
                     "catch_lookalike": "fail", "blind_observer": "n/a", "robot_a_side": "fail"}, report.lines()  # fmt: skip
    position = next(check for check in report.checks if check.code == "position_balance")
    assert position.figure == "predicted class on the left in 16 of 16 placed items (100.0%, p = 3.1e-05)"
    robot = next(check for check in report.checks if check.code == "robot_a_side")
    assert "stored assignments: model A left in 48 of 48 (100.0%)" in robot.figure
    assert "simulated draws" in robot.figure  # the allocation's own draw is fair


def test_a_biased_draw_fails_robot_a_side_before_anyone_took_part(monkeypatch):
    from studies.lib import choices as allocation

    study = build_study(kind=Study.Kind.TRUST, leaky=False, n_images=8, n_catch=2)

    def always_left(**kwargs):  # type: ignore[no-untyped-def]
        return allocation.AssignmentChoices(option_order=[], model_a_shown_left=True)

    monkeypatch.setattr(allocation, "assignment_choices", always_left)
    check = next(c for c in study_validity_audit(study_id=study.pk).checks if c.code == "robot_a_side")
    assert check.status == "fail"
    assert f"model A left in {validity.SIMULATED_DRAWS} of {validity.SIMULATED_DRAWS}" in check.figure


def test_report_is_stored_with_time_fingerprint_and_round_trips():
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=True, n_images=8, n_catch=4)
    report = study_validity_audit(study_id=study.pk)
    study.refresh_from_db()
    stored = study.validity_report
    assert stored["passed"] is False
    assert stored["ran_at"] == report.ran_at
    assert stored["fingerprint"] == validity.study_fingerprint(study=study)
    for check in stored["checks"]:
        assert all(check[key] for key in ("measured", "threshold", "figure")), check
    again = ValidityReport.from_dict(json.loads(json.dumps(stored)))
    assert again is not None
    assert again.to_dict() == stored
    assert ValidityReport.from_dict({**stored, "version": validity.AUDIT_VERSION + 1}) is None


# --- publishing needs it ---------------------------------------------------------------------------


def test_publish_runs_the_audit_and_refuses_a_leaky_study_until_acknowledged():
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=True, n_images=8, n_catch=4)
    Study.objects.filter(pk=study.pk).update(validity_acknowledged=True)  # ticked before any audit: not valid
    with pytest.raises(PrepareRefused, match=r"failed its validity audit \(it ran now.*position_balance"):
        study_publish(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.READY
    assert study.validity_report["passed"] is False
    assert study.validity_acknowledged is False  # a new report clears an acknowledgement given before it
    with pytest.raises(PrepareRefused, match="tick 'validity acknowledged'"):
        study_publish(study_id=study.pk)  # the stored report is current: it is not rerun, still refused
    study_validity_acknowledge(study_id=study.pk)
    assert study_publish(study_id=study.pk).status == Study.Status.LIVE


def test_an_acknowledgement_does_not_carry_over_to_changed_stimuli():
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=True, n_images=8, n_catch=4)
    study_validity_audit(study_id=study.pk)
    study_validity_acknowledge(study_id=study.pk)
    assert validity_publish_refusal(study_id=study.pk) is None
    item = study.items.filter(role=Item.Role.MAIN).first()
    other = study.items.filter(role=Item.Role.MAIN).exclude(stimulus_a=item.stimulus_a).last()
    Item.objects.filter(pk=item.pk).update(stimulus_a=other.stimulus_a)  # as if prepared again
    refusal = validity_publish_refusal(study_id=study.pk)
    assert refusal is not None
    assert "it ran now" in refusal
    study.refresh_from_db()
    assert study.validity_acknowledged is False


def test_publish_of_a_clean_study_stores_a_passing_report():
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=False)
    assert study_publish(study_id=study.pk).status == Study.Status.LIVE
    study.refresh_from_db()
    assert study.validity_report["passed"] is True
    assert study_publish(study_id=study.pk).status == Study.Status.LIVE  # live stays live


def test_a_study_that_is_not_ready_is_refused_before_any_audit():
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=True, n_images=4, n_catch=2,
                        status=Study.Status.DRAFT)  # fmt: skip
    with pytest.raises(PrepareRefused, match="prepare it first"):
        study_publish(study_id=study.pk)
    study.refresh_from_db()
    assert study.validity_report == {}


# --- the command ---------------------------------------------------------------------------------


def test_command_prints_figures_and_thresholds_and_exits_1_on_failure(capsys):
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=True, n_images=8, n_catch=4)
    with pytest.raises(SystemExit) as exited:
        call_command("audit_stimuli", study.name)
    assert exited.value.code == 1
    out = capsys.readouterr()
    assert "[FAIL] position_balance: most unbalanced: " in out.out
    assert "(threshold: |left - right| <= max(1, 0.2 x n), i.e. left share 40.0%-60.0%, for every category)" in out.out
    assert "measured: per category" in out.out
    assert "publishing is refused" in out.err
    call_command("audit_stimuli", str(study.pk), "--acknowledge")
    study.refresh_from_db()
    assert study.validity_acknowledged
    assert validity_publish_refusal(study_id=study.pk) is None


def test_command_passes_on_the_clean_study_and_prints_json(capsys):
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=False, n_images=8, n_catch=4)
    call_command("audit_stimuli", study.slug, "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True
    assert {check["code"] for check in report["checks"]} == {
        "stimulus_format", "file_size", "position_balance", "catch_lookalike", "blind_observer", "robot_a_side"}


# --- the admin -------------------------------------------------------------------------------------


def test_admin_page_shows_the_report_with_figures_and_thresholds(staff_client):
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=True, n_images=8, n_catch=4)
    url = reverse("admin:studies_study_change", args=[study.pk])
    assert "Not run yet" in staff_client.get(url).content.decode()
    report = study_validity_audit(study_id=study.pk)
    page = staff_client.get(url).content.decode()
    assert "Validity audit (before launch)" in page
    assert "Failed: " in page
    assert "Not acknowledged" in page
    from django.utils.html import escape

    for check in report.checks:
        assert escape(check.figure) in page
        assert escape(check.threshold) in page
        assert escape(check.measured) in page
    Item.objects.filter(study=study, role=Item.Role.MAIN).first().delete()
    assert "Stale:" in staff_client.get(url).content.decode()


def test_admin_refuses_to_set_a_leaky_study_live_until_acknowledged(staff_client):
    # Publishing is the change page's Publish button (the status field is read-only, issue #13).
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=True, n_images=8, n_catch=4)
    url = reverse("admin:studies_study_change", args=[study.pk])
    publish = reverse("admin:studies_study_lifecycle", args=[study.pk, "publish"])
    saved = staff_client.post(url, admin_change_form_data(staff_client, study, validity_acknowledged=True))
    assert saved.status_code == 302
    refused = staff_client.post(publish, follow=True)
    text = refused.content.decode()
    assert "failed its validity audit (it ran now, before publishing)" in text  # ticked blind: not enough
    study.refresh_from_db()
    assert study.status == Study.Status.READY
    assert study.validity_report["passed"] is False
    staff_client.post(url, admin_change_form_data(staff_client, study, validity_acknowledged=False))
    refused = staff_client.post(publish, follow=True)
    assert "tick &#x27;validity acknowledged&#x27;" in refused.content.decode()
    saved = staff_client.post(url, admin_change_form_data(staff_client, study, validity_acknowledged=True))
    assert saved.status_code == 302, saved.content.decode()[:3000]
    published = staff_client.post(publish, follow=True)
    assert "is live" in published.content.decode()
    study.refresh_from_db()
    assert study.status == Study.Status.LIVE
    assert study.validity_acknowledged
    assert study.validity_report["passed"] is False  # the form kept the stored report


def test_admin_sets_a_clean_study_live(staff_client):
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=False, n_images=8, n_catch=4)
    published = staff_client.post(reverse("admin:studies_study_lifecycle", args=[study.pk, "publish"]))
    assert published.status_code == 302
    study.refresh_from_db()
    assert study.status == Study.Status.LIVE
    assert study.validity_report["passed"] is True


def test_admin_action_runs_the_audit(staff_client):
    study = build_study(kind=Study.Kind.CLASS_DISCRIMINATION, leaky=True, n_images=8, n_catch=4)
    response = staff_client.post(reverse("admin:studies_study_changelist"),
                                 {"action": "audit_validity", "_selected_action": [study.pk], "index": "0"},
                                 follow=True)  # fmt: skip
    assert "validity audit FAILED: " in response.content.decode()
    study.refresh_from_db()
    assert study.validity_report["passed"] is False


# --- the statistics ------------------------------------------------------------------------------


def test_png_format_reads_size_mode_and_metadata_chunks():
    plain = _png(np.zeros((5, 7, 3)))
    tagged = _png(np.zeros((5, 7, 3)), text={"Comment": "x"})
    assert vs.png_format(plain) == vs.PngFormat(7, 5, "RGB", 8, ())
    assert vs.png_format(tagged).metadata == ("tEXt:Comment",)
    buffer = io.BytesIO()
    PILImage.new("L", (3, 3)).save(buffer, format="PNG")
    assert vs.png_format(buffer.getvalue()).mode == "L"
    assert vs.png_format(b"GIF89a...") is None
    assert vs.png_format(plain[:20]) is None  # truncated before the header's end


def test_logistic_fit_matches_statsmodels_without_penalty():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (rng.random(200) < 1 / (1 + np.exp(-(0.3 + x @ np.array([1.0, -2.0, 0.5]))))).astype(int)
    ours = vs.logistic_fit(x, y, l2=0.0)
    theirs = sm.Logit(y, sm.add_constant(x)).fit(disp=0).params
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8)


def test_classifier_audit_separates_styles_and_not_noise():
    rng = np.random.default_rng(1)
    y = np.array([1] * 10 + [0] * 60)
    separable = rng.normal(size=(70, 4)) + 3.0 * y[:, None]
    result = vs.classifier_audit(separable, y, seed=0, permutations=100)
    assert result.balanced_accuracy == pytest.approx(1.0)
    assert result.p_permutation < 0.05
    assert result.p_binomial < 0.05
    assert result.majority_rate == pytest.approx(60 / 70)
    noise = vs.classifier_audit(rng.normal(size=(70, 4)), y, seed=0, permutations=100)
    assert noise.p_permutation > 0.05
    assert vs.classifier_audit(separable, np.array([1] + [0] * 69), seed=0) is None  # one catch: nothing to fold


def test_layout_observers_and_side_counts():
    def layout(key: str, left: str, right: str, left_area: float = 1.0) -> vs.LayoutImage:
        return vs.LayoutImage(key, 10.0, {left: 2.0, right: 8.0}, {left: left_area, right: 1.0})

    always = [layout(str(i), "cat", "dog") for i in range(4)]
    trials = [(image, target, other) for image in always for target, other in (("cat", "dog"), ("dog", "cat"))]
    found = {o.name: o for o in vs.layout_observers(trials)}
    assert found["side only"].accuracy == 1.0
    assert found["side only"].p_value() < 0.01
    assert found["left box"].accuracy == found["right box"].accuracy == found["larger box"].accuracy == 0.5
    assert vs.category_side_counts(always)["cat"] == {"left": 4, "right": 0, "centre": 0}

    balanced = [layout("0", "cat", "dog"), layout("1", "dog", "cat"), layout("2", "cat", "dog"), layout("3", "dog", "cat")]
    trials = [(image, target, other) for image in balanced for target, other in (("cat", "dog"), ("dog", "cat"))]
    assert {o.name: o.accuracy for o in vs.layout_observers(trials)}["side only"] == 0.5
    bigger_target = [(layout(str(i), "cat", "dog", left_area=4.0), "cat", "dog") for i in range(6)]
    assert {o.name: o.accuracy for o in vs.layout_observers(bigger_target)}["larger box"] == 1.0
    stacked = vs.LayoutImage("l", 10.0, {"cat": 5.0, "dog": 5.5})  # one above the other
    assert stacked.side("cat") is None
    assert vs.layout_from_boxes("k", 10, ["cat", "dog"], [{"category": "cat", "x0": 0, "y0": 0, "x1": 4, "y1": 2}]).side("cat") == "left"


@pytest.mark.parametrize(("n", "allowed"), [(1, 1), (2, 1), (4, 1), (5, 1), (10, 2), (16, 3), (100, 20)])
def test_side_balance_allowed(n, allowed):
    assert vs.side_balance_allowed(n, 0.2) == allowed


def test_image_statistics_tell_a_hard_box_from_a_heat_map():
    rng = np.random.default_rng(3)
    box = {"x0": 2, "y0": 10, "x1": 22, "y1": 38}
    hard = vs.image_statistics(_png(hard_box(box)))
    soft = vs.image_statistics(_png(heat_picture(rng, box)))
    names = list(vs.FEATURE_NAMES)
    assert hard[names.index("clipped pixels")] == pytest.approx(20 * 28 / SIDE**2)  # the box: R, B at 0, G at 255
    assert hard[names.index("mean green")] == pytest.approx((128 * (SIDE**2 - 560) + 255 * 560) / SIDE**2 / 255)
    assert hard[names.index("bytes per pixel")] < soft[names.index("bytes per pixel")]
    assert len(hard) == len(names)


def test_command_names_an_unknown_study():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"no study matches 'no-such-study'"):
        call_command("audit_stimuli", "no-such-study")


def test_trust_side_of_the_predicted_class_fails_only_when_also_significant():
    study = build_study(kind=Study.Kind.TRUST, leaky=False, n_images=8, n_catch=2)
    for image in Image.objects.filter(items__study=study, items__role=Item.Role.MAIN).distinct().order_by("pk")[4:6]:
        left, right = image.boxes  # swap the objects' places
        image.boxes = [{**left, "category": right["category"]}, {**right, "category": left["category"]}]
        image.save(update_fields=["boxes"])
    check = next(c for c in study_validity_audit(study_id=study.pk).checks if c.code == "position_balance")
    assert check.data["target_sides"] == {"left": 6, "right": 2, "centre": 0}
    assert "imbalance 4 > 1" in check.details[-1]
    assert check.status == "pass"  # 6 of 8: p = 0.29, a small trust study the planner may not balance

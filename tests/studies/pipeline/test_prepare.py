"""Preparation pipeline, run inline/eagerly on the embedded settings (SQLite, eager Celery).

Models are random-initialised synthetic CNNs (no training) on a few generated scenes, so each
test takes about a second; what is asserted is the bookkeeping: items per kind, stimulus rows
and files, idempotency, failures with their message.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils.html import escape
from PIL import Image as PILImage

from studies.fixtures.builders import TEST_CONSENT, synthetic_model_create, synthetic_scenes_import
from studies.models import ClassifierModel, Image, Item, Job, ModelPair, Prediction, Stimulus, Study
from studies.pipeline.jobs import job_progress
from studies.pipeline.plan import study_chunks
from studies.pipeline.prepare import job_cancel, job_resume, prepare_inline, study_prepare
from studies.services.lifecycle import study_publish

pytestmark = pytest.mark.django_db

METHODS = ["gradcam", "guided_backprop"]


def _image_set(n: int = 3, name: str = "scenes"):
    return synthetic_scenes_import(n=n, seed=7, name=name)


def _model(name: str, seed: int, tmp_path: Path) -> ClassifierModel:
    return synthetic_model_create(name=name, directory=tmp_path, seed=seed)


@pytest.fixture
def discrimination(tmp_path: Path) -> Study:
    return Study.objects.create(
        name="d", kind=Study.Kind.CLASS_DISCRIMINATION, model=_model("m", 0, tmp_path), image_set=_image_set(),
        methods=METHODS, catch_trials=1, practice_trials=1, seed=123,
        explainer_options={"display_size": 64, "chunk_size": 2}, consent_text=TEST_CONSENT,
    )


@pytest.fixture
def trust(tmp_path: Path) -> Study:
    pair = ModelPair.objects.create(name="p", model_a=_model("a", 1, tmp_path), model_b=_model("b", 2, tmp_path))
    return Study.objects.create(
        name="t", kind=Study.Kind.TRUST, model_pair=pair, image_set=_image_set(), methods=METHODS,
        catch_trials=1, practice_trials=1, require_both_correct=False, seed=5, explainer_options={"display_size": 64}, consent_text=TEST_CONSENT,
    )


def _stimulus_files() -> set[str]:
    root = Path(default_storage.location) / "stimuli"
    return {str(p.relative_to(default_storage.location)) for p in root.rglob("*") if p.is_file()}


def test_discrimination_plan_and_stimuli(discrimination: Study) -> None:
    job = prepare_inline(study_id=discrimination.pk)
    assert job.status == Job.Status.DONE, job.error
    assert (job.done, job.total) == (job.total, discrimination.items.count())
    main = discrimination.items.filter(role=Item.Role.MAIN)
    main_images = set(main.values_list("image_id", flat=True))
    practice = discrimination.items.filter(role=Item.Role.PRACTICE)
    assert practice.count() == 1 * 2 + 1  # practice_trials x practice_attempts + the worked example
    # one of the three images is reserved for the practice pool (at most a third of the main images)
    assert len(main_images) == 2
    assert main_images.isdisjoint(practice.values_list("image_id", flat=True))
    assert main.count() == 2 * 2 * len(METHODS)  # images x categories x methods
    for item in main:
        assert item.options == item.image.categories
        assert item.options[item.correct_option] == item.target_label
        assert item.stimulus_a is not None
        assert item.stimulus_a.method == item.method
        assert item.stimulus_a.target_class == ["circle", "square", "triangle", "cross"].index(item.target_label)
    catch = discrimination.items.filter(role=Item.Role.CATCH)
    assert catch.count() == 2
    assert catch.exclude(image_id__in=main_images).count() == 0  # catch items are not on the practice image
    for item in [*catch, *practice]:  # a real map of one of the study's methods, the same kind of stimulus
        assert item.method in METHODS
        assert item.stimulus_a.method == item.method
        assert item.stimulus_a.target_class == item.target_class
        assert item.options[item.correct_option] == item.target_label
    assert Prediction.objects.filter(model=discrimination.model).count() == 3
    discrimination.refresh_from_db()
    assert discrimination.status == Study.Status.READY
    rows = Stimulus.objects.all()
    assert {r.file.name for r in rows} == _stimulus_files()
    for row in rows:
        data = default_storage.open(row.file.name).read()
        assert PILImage.open(io.BytesIO(data)).size == (64, 64)
        assert row.file.name.endswith(f"{row.sha256}.png")
    ranks = sorted(discrimination.items.values_list("tie_rank", flat=True))
    assert ranks == list(range(discrimination.items.count()))


def test_preparing_twice_adds_nothing(discrimination: Study) -> None:
    prepare_inline(study_id=discrimination.pk)
    before = (set(Stimulus.objects.values_list("pk", "sha256")), _stimulus_files(),
              set(Item.objects.values_list("pk", "tie_rank", "stimulus_a_id")), Prediction.objects.count())
    second = prepare_inline(study_id=discrimination.pk)
    assert second.status == Job.Status.DONE
    assert second.done == second.total
    after = (set(Stimulus.objects.values_list("pk", "sha256")), _stimulus_files(),
             set(Item.objects.values_list("pk", "tie_rank", "stimulus_a_id")), Prediction.objects.count())
    assert after == before
    assert discrimination.jobs.count() == 2


def test_trust_items_show_both_models(trust: Study) -> None:
    job = prepare_inline(study_id=trust.pk)
    assert job.status == Job.Status.DONE, job.error
    pair = trust.model_pair
    main = trust.items.filter(role=Item.Role.MAIN)
    assert main.count() == 2 * len(METHODS)  # one image of three reserved for the practice pool
    for item in main:
        assert item.stimulus_a.model_id == pair.model_a_id
        assert item.stimulus_b.model_id == pair.model_b_id
        assert item.stimulus_a.target_class == item.stimulus_b.target_class == item.target_class
    obvious = trust.items.exclude(role=Item.Role.MAIN)
    sides = list(obvious.values_list("correct_option", flat=True))
    assert len(sides) == 5
    assert abs(sides.count(0) - sides.count(1)) == 1  # robot A / B sides balanced
    for item in obvious:  # the reasonable robot's map of the target, the other's of the other object
        right, wrong = (item.stimulus_a, item.stimulus_b) if item.correct_option == 0 else (item.stimulus_b, item.stimulus_a)
        assert right.method == wrong.method == item.method
        assert right.target_class == item.target_class
        other = next(c for c in item.image.categories if c != item.target_label)
        assert wrong.target_class == ["circle", "square", "triangle", "cross"].index(other)


def test_trust_requires_both_models_correct(trust: Study) -> None:
    trust.require_both_correct = True
    trust.save()
    prepare_inline(study_id=trust.pk)
    for item in trust.items.filter(role=Item.Role.MAIN):
        m = len(item.image.categories)
        for model in (trust.model_pair.model_a, trust.model_pair.model_b):
            assert item.target_class in Prediction.objects.get(model=model, image=item.image).top_classes[:m]


def test_tie_ranks_follow_the_seed(discrimination: Study) -> None:
    from studies.pipeline.plan import _assign_tie_ranks

    prepare_inline(study_id=discrimination.pk)
    first = list(discrimination.items.order_by("pk").values_list("tie_rank", flat=True))
    _assign_tie_ranks(discrimination)
    assert list(discrimination.items.order_by("pk").values_list("tie_rank", flat=True)) == first
    discrimination.seed = 124
    _assign_tie_ranks(discrimination)
    assert list(discrimination.items.order_by("pk").values_list("tie_rank", flat=True)) != first


def test_chunks_partition_images_per_model(discrimination: Study) -> None:
    prepare_inline(study_id=discrimination.pk)
    chunks = study_chunks(discrimination, only_missing=False)
    ids = sorted(discrimination.image_set.images.values_list("pk", flat=True))
    assert [c.image_ids for c in chunks] == [tuple(ids[:2]), tuple(ids[2:])]
    assert study_chunks(discrimination) == []


def test_weights_that_do_not_fit_fail_the_job_with_the_file(discrimination: Study, tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "bad.pt")
    model = discrimination.model
    model.weights = default_storage.save("weights/bad.pt", ContentFile((tmp_path / "bad.pt").read_bytes()))
    model.weights_sha256 = ""
    model.save()
    job = prepare_inline(study_id=discrimination.pk)
    assert job.status == Job.Status.FAILED
    assert "bad" in job.error
    assert "does not fit" in job.error
    assert "'m'" in job.error
    discrimination.refresh_from_db()
    assert discrimination.status == Study.Status.FAILED
    assert not Stimulus.objects.exists()


def test_wrong_layer_fails_then_fix_and_prepare_again(discrimination: Study) -> None:
    ClassifierModel.objects.filter(pk=discrimination.model_id).update(target_layer="features.nope")
    job = prepare_inline(study_id=discrimination.pk)
    assert job.status == Job.Status.FAILED
    assert "features.nope" in job.error
    ClassifierModel.objects.filter(pk=discrimination.model_id).update(target_layer="")
    again = prepare_inline(study_id=discrimination.pk)
    assert again.status == Job.Status.DONE, again.error
    discrimination.refresh_from_db()
    assert discrimination.status == Study.Status.READY


def test_unreadable_image_fails_naming_it(discrimination: Study) -> None:
    image = Image.objects.filter(image_set=discrimination.image_set).order_by("pk")[1]
    Path(default_storage.path(image.file.name)).write_bytes(b"not a png")
    job = prepare_inline(study_id=discrimination.pk)
    assert job.status == Job.Status.FAILED
    assert image.original_name in job.error
    assert "cannot be read" in job.error


def test_unknown_method_fails(discrimination: Study) -> None:
    Study.objects.filter(pk=discrimination.pk).update(methods=["gradcam", "magic"])
    job = prepare_inline(study_id=discrimination.pk)
    assert job.status == Job.Status.FAILED
    assert "magic" in job.error


def test_cancel_and_resume(discrimination: Study) -> None:
    job = study_prepare(study_id=discrimination.pk, enqueue=False)
    job_cancel(job_id=job.pk)
    job.refresh_from_db()
    discrimination.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert discrimination.status == Study.Status.DRAFT
    from studies.pipeline.stages import prepare_chunk_stage, prepare_plan_stage, prepare_predict_stage

    assert prepare_predict_stage(job_id=job.pk) is False  # a cancelled job does nothing
    job_resume(job_id=job.pk, enqueue=False)
    assert prepare_predict_stage(job_id=job.pk)
    chunks = prepare_plan_stage(job_id=job.pk)
    prepare_chunk_stage(job_id=job.pk, model_id=chunks[0].model_id, image_ids=list(chunks[0].image_ids))
    job.refresh_from_db()
    assert 0 < job.done < job.total
    assert "ETA" in job_progress(job).describe()
    for chunk in chunks[1:]:
        prepare_chunk_stage(job_id=job.pk, model_id=chunk.model_id, image_ids=list(chunk.image_ids))
    job.refresh_from_db()
    assert job.status == Job.Status.DONE


def test_eager_tasks_run_the_whole_pipeline(discrimination: Study, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        job = study_prepare(study_id=discrimination.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.error
    # Publishing checks the trials against the main items made (issue #13): 20 is more than there are.
    main = discrimination.items.filter(role="main").count()
    Study.objects.filter(pk=discrimination.pk).update(trials_per_participant=min(main, 4), catch_trials=1)
    assert study_publish(study_id=discrimination.pk).status == Study.Status.LIVE


def test_web_modules_do_not_import_torch() -> None:
    code = ("import django, sys; django.setup(); import studies.web.health, studies.admin, studies.web.urls, "
            "studies.pipeline.prepare, studies.pipeline.plan, studies.tasks; "
            "print('torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('explainers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "xaistudy.settings"})
    # The method registry (names, descriptions, output kinds) is read by the web process; the engine is not.
    assert out.stdout.strip().split(maxsplit=1) == ["False", "['explainers', 'explainers.registry']"], out.stderr


class WorkerLost(BaseException):
    """Stands in for SIGKILL: not an ``Exception``, so no handler in the stage runs after it."""


@pytest.mark.django_db(transaction=True)
def test_poisoned_chunk_is_given_up_after_the_attempt_cap(discrimination: Study, settings, staff_client,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk that kills its worker every time: deliveries 1..N count and die, N+1 fails the job."""
    from studies.pipeline.gpu import explain_runner
    from studies.pipeline.stages import chunk_key, prepare_plan_stage, prepare_predict_stage
    from studies.tasks import gpu_prepare_chunk

    settings.XAISTUDY_CHUNK_MAX_ATTEMPTS = 2
    job = study_prepare(study_id=discrimination.pk, enqueue=False)
    assert prepare_predict_stage(job_id=job.pk)
    chunks = prepare_plan_stage(job_id=job.pk)
    poisoned = chunks[0]
    assert len(poisoned.image_ids) == 2
    key = chunk_key(poisoned)
    real_explain = explain_runner.explain_chunk
    calls: list[int] = []

    def dies(*args: object, **kwargs: object) -> object:
        calls.append(1)
        raise WorkerLost

    monkeypatch.setattr(explain_runner, "explain_chunk", dies)
    for attempt in (1, 2):  # each delivery the way Celery redelivers it: the task entry point, same arguments
        with pytest.raises(WorkerLost):
            gpu_prepare_chunk(job.pk, poisoned.model_id, list(poisoned.image_ids))
        job.refresh_from_db()  # committed before the heavy work, so the "crash" did not roll it back
        assert job.chunk_attempts == {key: attempt}
        assert job.status == Job.Status.RUNNING
    assert len(calls) == 2

    assert gpu_prepare_chunk(job.pk, poisoned.model_id, list(poisoned.image_ids)) == 0  # delivery N+1
    assert len(calls) == 2  # not computed again
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.chunk_attempts == {key: 3}
    first_line = job.error.splitlines()[0]
    items = discrimination.items.filter(image_id__in=poisoned.image_ids)
    n_methods = len(set(items.values_list("method", flat=True)))  # gradcam, guided_backprop (catch maps: gated ones)
    assert items.count() >= 2 * len(METHODS)
    assert first_line == (f"chunk {key} of model 'm' (2 images, {items.count()} items, {n_methods} methods, "
                          f"{items.count()} stimuli) was started 2 times and never finished; not computed again")
    assert "XAISTUDY_CHUNK_MAX_ATTEMPTS=2" in job.error
    discrimination.refresh_from_db()
    assert discrimination.status == Study.Status.FAILED
    assert not Stimulus.objects.filter(image_id__in=poisoned.image_ids).exists()

    assert gpu_prepare_chunk(job.pk, poisoned.model_id, list(poisoned.image_ids)) == 0  # a later redelivery
    job.refresh_from_db()
    assert len(calls) == 2
    assert job.chunk_attempts == {key: 3}

    page = staff_client.get("/admin/studies/job/")  # the job list shows the first line of the error
    assert escape(first_line[:160]) in page.content.decode()
    page = staff_client.get(f"/admin/studies/study/{discrimination.pk}/change/")  # the study's job inline
    assert escape(first_line) in page.content.decode()

    # the cause fixed (here: the computation works again), a deliberate resume starts the counts afresh
    monkeypatch.setattr(explain_runner, "explain_chunk", real_explain)
    job = job_resume(job_id=job.pk, enqueue=False)
    assert job.chunk_attempts == {}
    assert prepare_predict_stage(job_id=job.pk)
    for chunk in prepare_plan_stage(job_id=job.pk):
        gpu_prepare_chunk(job.pk, chunk.model_id, list(chunk.image_ids))
    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.error
    assert job.chunk_attempts == {key: 1, chunk_key(chunks[1]): 1}


def _png_layout(data: bytes) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """IHDR fields (width, height, bit depth, colour type, compression, filter, interlace) and chunk types."""
    import struct

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, ihdr, kinds = 8, (), []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8].decode("ascii")
        if kind == "IHDR":
            ihdr = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + length])
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
        pos += 12 + length
    return ihdr, tuple(kinds)


def test_stimuli_do_not_betray_their_method_by_file_properties(tmp_path: Path) -> None:
    """Every method's PNG of one image has the same size, mode and PNG layout.

    A worker must tell methods apart only by the heatmap: no pixel size, colour mode, bit depth,
    interlacing or metadata chunk may differ by method. The display size (96) differs from the
    model input (64) so that both render paths (gradient-space and CAM overlay) resize.
    """
    from explainers.registry import METHODS
    from studies.lib.rendering import is_map

    # every map method; stimuli that show no map (the picture alone, k example images side by side)
    # are told apart by what they show anyway: tests/studies/pipeline/test_example_stimuli.py
    ALL_METHODS = [m for m in METHODS if is_map(m)]
    study = Study.objects.create(
        name="every-method", kind=Study.Kind.CLASS_DISCRIMINATION, model=_model("every", 0, tmp_path),
        image_set=_image_set(1, name="one"), methods=list(ALL_METHODS), catch_trials=1, practice_trials=1, seed=1,
        explainer_options={"display_size": 96, "rise": {"masks": 200}, "occlusion": {"window": 16, "stride": 8}},
    )
    job = prepare_inline(study_id=study.pk)
    assert job.status == Job.Status.DONE, job.error
    [image] = study.image_set.images.all()
    stimuli = Stimulus.objects.filter(image=image)  # both categories' maps of every method
    methods = set(stimuli.values_list("method", flat=True))
    assert methods == set(ALL_METHODS)  # catch and practice maps are real maps of the study's methods
    seen = {}
    for row in stimuli:
        data = default_storage.open(row.file.name).read()
        picture = PILImage.open(io.BytesIO(data))
        seen[row.method] = (picture.size, picture.mode, _png_layout(data), tuple(sorted(picture.info)))
    assert set(seen.values()) == {((96, 96), "RGB", ((96, 96, 8, 2, 0, 0, 0), ("IHDR", "IDAT", "IEND")), ())}, seen


def test_exact_option_runs_the_model_as_given_and_keys_new_stimuli(discrimination: Study, monkeypatch) -> None:
    """``explainer_options["exact"]``: maps from the model as given (``fast=False``), stored
    under new keys beside the fast-copy stimuli; catch and practice maps are real maps too, so
    they are keyed anew as well."""
    from studies.pipeline.gpu import explain_runner

    calls: list[bool] = []
    real_explain = explain_runner.explain

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("fast", True)))
        return real_explain(*args, **kwargs)

    monkeypatch.setattr(explain_runner, "explain", spy)
    assert prepare_inline(study_id=discrimination.pk).status == Job.Status.DONE
    assert calls
    assert all(calls)  # the default: the fast copy
    explained = Stimulus.objects.all()
    fast_keys = set(explained.values_list("settings_hash", flat=True))  # one per (model, method)
    n_explained = explained.count()
    assert not any("exact" in s for s in explained.values_list("settings", flat=True))

    calls.clear()
    discrimination.explainer_options = {**discrimination.explainer_options, "exact": True}
    discrimination.status = Study.Status.DRAFT
    discrimination.save(update_fields=["explainer_options", "status"])
    assert prepare_inline(study_id=discrimination.pk).status == Job.Status.DONE
    assert calls
    assert not any(calls)  # fast=False on every call
    exact_rows = Stimulus.objects.exclude(settings_hash__in=fast_keys)
    assert exact_rows.count() == n_explained
    assert all(s["exact"] is True for s in exact_rows.values_list("settings", flat=True))
    linked = set(discrimination.items.filter(role=Item.Role.MAIN).values_list("stimulus_a__settings_hash", flat=True))
    assert linked.isdisjoint(fast_keys)


def test_a_chunks_existing_stimuli_are_read_in_one_query(trust: Study, django_assert_num_queries) -> None:
    """``_existing``: the stored stimuli of every slot of a chunk (both robots' maps) in one query."""
    import dataclasses

    from studies.pipeline.plan import chunk_slots
    from studies.pipeline.stages import _existing
    from studies.pipeline.stimuli import stimuli_find

    assert prepare_inline(study_id=trust.pk).status == Job.Status.DONE
    chunks = study_chunks(trust, only_missing=False)
    assert {chunk.model_id for chunk in chunks} == {trust.model_pair.model_a_id, trust.model_pair.model_b_id}
    for chunk in chunks:
        slots = chunk_slots(trust, chunk)
        assert len(slots) > 1
        with django_assert_num_queries(1):
            found = _existing(slots)
        assert set(found) == {slot.key for slot in slots}
        for key, stimulus in found.items():
            assert (stimulus.image_id, stimulus.model_id, stimulus.method, stimulus.target_class,
                    stimulus.settings_hash) == dataclasses.astuple(key)
    key = slots[0].key
    missing = dataclasses.replace(key, target_class=key.target_class + 100)
    with django_assert_num_queries(1):
        assert set(stimuli_find([key, missing])) == {key}
    with django_assert_num_queries(0):
        assert stimuli_find([]) == {}


def test_a_bad_option_fails_the_job_naming_the_key(discrimination: Study) -> None:
    """A study saved without ``full_clean`` (the admin form refuses it) fails its preparation with the message."""
    Study.objects.filter(pk=discrimination.pk).update(explainer_options={"display_size": 64, "overlay_base": "sepia"})
    job = prepare_inline(study_id=discrimination.pk)
    assert job.status == Job.Status.FAILED
    assert job.error == "explainer_options['overlay_base'] must be one of ('gray', 'color'), got 'sepia'"
    discrimination.refresh_from_db()
    assert discrimination.status == Study.Status.FAILED

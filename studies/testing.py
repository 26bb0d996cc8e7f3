"""Factories for tests (and quick manual tries): a small live study with generated PNG stimuli.

No torch, no pipeline: each stimulus is a tiny solid-colour PNG written through the default
storage, so tests of the worker flow run in milliseconds on SQLite or PostgreSQL.
"""

from __future__ import annotations

import hashlib
import io
import random

from django.core.files.base import ContentFile
from PIL import Image as PILImage

from studies.consent import DEFAULT_CONSENT_TEMPLATE, consent_fill
from studies.models import ClassifierModel, Image, ImageSet, Item, ModelPair, Stimulus, Study


def png_bytes(color: tuple[int, int, int], size: int = 16) -> bytes:
    """A solid-colour PNG."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _stimulus(image: Image, model: ClassifierModel, method: str, target: int, seed: int) -> Stimulus:
    rng = random.Random(f"{image.pk}:{model.pk}:{method}:{target}:{seed}")
    data = png_bytes((rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    digest = hashlib.sha256(data).hexdigest()
    stimulus = Stimulus(image=image, model=model, method=method, target_class=target, settings={}, settings_hash="t", sha256=digest)
    stimulus.file.save(f"stimuli/{digest[:2]}/{digest}.png", ContentFile(data), save=False)
    stimulus.save()
    return stimulus


#: A consent text with every field of the default template filled (publish refuses ``[FIELD]``s).
TEST_CONSENT = consent_fill(DEFAULT_CONSENT_TEMPLATE, {
    "DURATION": "5 minutes", "PAY": "USD 1.00", "CONTACT": "research@example.org",
    "DATA USE": "The answers are analysed for a test.",
})  # fmt: skip


def make_worker_study(
    *,
    kind: str = Study.Kind.CLASS_DISCRIMINATION,
    n_main: int = 6,
    n_catch: int = 0,
    n_practice: int = 1,
    judgments_per_item: int = 2,
    trials_per_participant: int = 3,
    platform: str = Study.Platform.LINK,
    status: str = Study.Status.LIVE,
    lease_seconds: int = 600,
    questionnaire: list | None = None,
    prolific_completion_url: str = "",
    name: str = "worker-study",
    with_files: bool = True,
) -> Study:
    """Create a study whose items are ready to be shown (discrimination or trust)."""
    suffix = Study.objects.count()
    classes = ["cat", "dog", "car", "tree"]
    model_a = ClassifierModel.objects.create(name=f"{name}-a-{suffix}", arch="resnet18", class_names=classes)
    model_b = ClassifierModel.objects.create(name=f"{name}-b-{suffix}", arch="resnet18", class_names=classes)
    pair = ModelPair.objects.create(name=f"{name}-pair-{suffix}", model_a=model_a, model_b=model_b)
    image_set = ImageSet.objects.create(name=f"{name}-set-{suffix}", categories=classes)
    study = Study.objects.create(
        name=f"{name} {suffix}", kind=kind, methods=["gradcam"], image_set=image_set,
        model=model_a if kind == Study.Kind.CLASS_DISCRIMINATION else None,
        model_pair=pair if kind == Study.Kind.TRUST else None,
        judgments_per_item=judgments_per_item, trials_per_participant=trials_per_participant,
        catch_trials=n_catch, practice_trials=n_practice, platform=platform, status=status,
        lease_seconds=lease_seconds, questionnaire=questionnaire or [],
        prolific_completion_url=prolific_completion_url, seed=12345, consent_text=TEST_CONSENT,
    )  # fmt: skip
    rng = random.Random(study.seed)
    roles = [Item.Role.MAIN] * n_main + [Item.Role.CATCH] * n_catch + [Item.Role.PRACTICE] * n_practice
    items = []
    for index, role in enumerate(roles):
        image = Image.objects.create(
            image_set=image_set, original_name=f"img{index}.png", sha256=f"{index:064x}", width=16, height=16,
            categories=["cat", "dog"], file=f"images/img{index}.png",
        )  # fmt: skip
        target = index % 2
        stim_a = _stimulus(image, model_a, "gradcam", target, study.seed) if with_files else None
        stim_b = _stimulus(image, model_b, "gradcam", target, study.seed) if with_files and kind == Study.Kind.TRUST else None
        items.append(
            Item(
                study=study, role=role, method="gradcam", image=image, target_class=target,
                target_label=classes[target], options=["cat", "dog"] if kind == Study.Kind.CLASS_DISCRIMINATION else [],
                correct_option=target if kind == Study.Kind.CLASS_DISCRIMINATION else (0 if role == Item.Role.CATCH else None),
                stimulus_a=stim_a, stimulus_b=stim_b, tie_rank=rng.randrange(1_000_000),
            )
        )  # fmt: skip
    Item.objects.bulk_create(items)
    return study

"""The foundation's wiring against real services: PostgreSQL, Redis and a Celery worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from studies.models import (
    Assignment,
    ClassifierModel,
    Image,
    ImageSet,
    Item,
    Participant,
    Response,
    Study,
)
from studies.services.importers import ImageRecord, image_set_import
from studies.tasks import verify_image_set

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_database_is_postgresql() -> None:
    assert connection.vendor == "postgresql"
    assert not settings.CELERY_TASK_ALWAYS_EAGER


def test_task_runs_in_the_worker_process_and_sees_committed_rows(
    celery_worker_process, services_media: Path, make_image_bytes
) -> None:
    image_set = image_set_import(
        name="svc",
        records=[
            ImageRecord(name="a.png", data=make_image_bytes(color=(1, 2, 3)), categories=["cat"]),
            ImageRecord(name="b.png", data=make_image_bytes(color=(4, 5, 6)), categories=["dog"]),
        ],
    )
    result = verify_image_set.delay(image_set.pk)
    assert result.get(timeout=60) == {"checked": 2, "missing": [], "mismatched": []}
    # Tamper with one stored file: the worker re-hashes and names it.
    tampered = Image.objects.get(original_name="b.png")
    Path(tampered.file.path).write_bytes(b"tampered")
    assert verify_image_set.delay(image_set.pk).get(timeout=60)["mismatched"] == ["b.png"]
    # The result travelled through the Redis result backend, written by the worker process.
    assert type(result.backend).__name__ == "RedisBackend"
    assert result.state == "SUCCESS"


def _study(make_image_bytes) -> tuple[Study, Item]:
    image_set = ImageSet.objects.create(name="c", categories=["cat", "dog"])
    image = Image.objects.create(image_set=image_set, file="x.png", original_name="x.png", sha256="0" * 64,
                                 width=1, height=1, categories=["cat", "dog"])  # fmt: skip
    model = ClassifierModel.objects.create(name="m", arch="resnet18", class_names=["cat", "dog"])
    study = Study.objects.create(name="s", kind=Study.Kind.CLASS_DISCRIMINATION, model=model, image_set=image_set)
    item = Item.objects.create(study=study, method="gradcam", image=image, target_class=0, options=["cat", "dog"])
    return study, item


def test_postgres_enforces_the_constraints(make_image_bytes) -> None:
    from django.utils import timezone

    study, item = _study(make_image_bytes)
    participant = Participant.objects.create(study=study, platform="link", platform_worker_id="w1", session_key="s1",
                                             worker_hash="h")  # fmt: skip
    # One participant per platform session (worker ids are public: they bind nothing).
    with pytest.raises(IntegrityError), transaction.atomic():
        Participant.objects.create(study=study, platform="link", platform_worker_id="w9", session_key="s1", worker_hash="h")
    Participant.objects.create(study=study, platform="link", platform_worker_id="w8", session_key="s8", worker_hash="h",
                               invitation="n1")  # fmt: skip
    with pytest.raises(IntegrityError), transaction.atomic():
        Participant.objects.create(study=study, platform="link", platform_worker_id="w7", session_key="s7", worker_hash="h",
                                   invitation="n1")  # fmt: skip
    assignment = Assignment.objects.create(participant=participant, item=item, position=0, expires_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(participant=participant, item=item, position=1, expires_at=timezone.now())
    Response.objects.create(assignment=assignment, score_model_a=2)
    with pytest.raises(IntegrityError), transaction.atomic():
        Response.objects.create(assignment=assignment, score_model_a=1)
    other = Assignment.objects.create(
        participant=Participant.objects.create(study=study, platform="link", platform_worker_id="w2", worker_hash="h2"),
        item=item, position=0, expires_at=timezone.now(),
    )  # fmt: skip
    with pytest.raises(IntegrityError), transaction.atomic():
        Response.objects.create(assignment=other, score_model_a=3)
    with pytest.raises(IntegrityError), transaction.atomic():
        Study.objects.create(name="t", kind=Study.Kind.TRUST, image_set=study.image_set)

"""A study's lifecycle: prepare, publish (live), pause, close. The one writer of ``Study.status``
outside the preparation itself.

::

    draft --prepare--> preparing --(job done)--> ready --publish--> live --pause--> ready
      |                    |  (job failed: failed; cancelled: draft)              |
      +-------------------(close from draft, failed, ready, live)------------------> closed

- :func:`study_prepare` opens the preparation (:func:`studies.pipeline.prepare.study_prepare`:
  the job sets ``preparing``, then ``ready`` or ``failed``).
- :func:`study_publish` sets a ready study live after its checks (configuration, consent,
  stimuli, the validity audit); :func:`study_pause` takes a live one back to ready;
  :func:`study_close` ends a study for good, refused while a preparation job is active.

Each step is refused with :class:`PrepareRefused` (the reason in the message);
:class:`ConfigRefused` carries the configuration's errors by field. The steps lock the study's
row, so two requests cannot both take one.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q

from studies.models import Item, Job, Study
from studies.pipeline.jobs import ACTIVE, PrepareRefused

__all__ = ["ConfigRefused", "PrepareRefused", "study_close", "study_pause", "study_prepare", "study_publish"]


def study_prepare(*, study_id: int, enqueue: bool = True, background: bool = False) -> Job:
    """Open the study's preparation (or return the job already running); see
    :func:`studies.pipeline.prepare.study_prepare` (refused for live and closed studies)."""
    from studies.pipeline import prepare

    return prepare.study_prepare(study_id=study_id, enqueue=enqueue, background=background)


def _errors_text(errors: dict[str, list[str]]) -> str:
    return "; ".join(f"{field}: {message}" for field, messages in errors.items() for message in messages)


class ConfigRefused(PrepareRefused):
    """The study's configuration has errors; ``errors`` maps each field to its messages."""

    def __init__(self, study_name: str, errors: dict[str, list[str]]):
        super().__init__(f"study {study_name!r} cannot go live: {_errors_text(errors)}")
        self.errors = errors


def study_publish(*, study_id: int) -> Study:
    """Set a ready study live (the worker entry then accepts participants).

    Refused (:class:`PrepareRefused`, with the reason) unless the study is ready, its
    configuration passes :func:`~studies.services.study_checks.study_config_errors` with the real
    number of main items (:class:`ConfigRefused`, by field: e.g. more trials per participant
    than main items) and its consent text has no unfilled ``[FIELD]`` (``studies.lib.consent``), every
    main item has its stimuli, and the pre-launch validity audit passed
    or its failures were acknowledged (:func:`studies.services.validity.validity_publish_refusal`,
    which reruns a missing or stale audit first). A study that is live already stays live. A
    paused study (``ready`` with participants) is published again the same way.
    """
    from studies.lib.consent import consent_errors
    from studies.services.study_checks import study_config_errors
    from studies.services.validity import validity_publish_refusal

    def stimuli_missing(study: Study) -> bool:
        return study.items.filter(role=Item.Role.MAIN).filter(Q(stimulus_a__isnull=True)).exists()

    def config_check(study: Study) -> None:
        n_main = study.items.filter(role=Item.Role.MAIN).count()
        errors = study_config_errors(study=study, n_main_items=n_main)
        if consent := consent_errors(study.consent_text):  # a draft may keep [PAY]; a live study may not
            errors["consent_text"] = consent
        if errors:
            raise ConfigRefused(study.name, errors)

    current = Study.objects.get(pk=study_id)
    refusal = None
    if current.status == Study.Status.READY and not stimuli_missing(current):
        config_check(current)
        refusal = validity_publish_refusal(study_id=study_id)  # reads every stimulus: outside the row lock
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.status not in (Study.Status.READY, Study.Status.LIVE):
            raise PrepareRefused(f"study {study.name!r} is {study.get_status_display()}; prepare it first")
        if stimuli_missing(study):
            raise PrepareRefused(f"study {study.name!r} has items without stimuli; prepare it again")
        if study.status == Study.Status.LIVE:
            return study
        config_check(study)
        if current.status != Study.Status.READY:  # it became ready meanwhile: audit now
            refusal = validity_publish_refusal(study_id=study_id)
        if refusal is not None:
            raise PrepareRefused(refusal)
        study.status = Study.Status.LIVE
        study.save(update_fields=["status"])
    return study


def study_pause(*, study_id: int) -> Study:
    """Stop new entries to a live study: it goes back to ``ready``, Publish opens it again.

    While paused the entry link refuses everyone with "This study is not open at the moment"
    (returning workers too, since entering again goes through that check); participants whose
    pages are open keep their token and may finish their trials and be paid. A paused study is
    ``ready`` with participants: the admin's live-change guard still applies to it.
    """
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.status != Study.Status.LIVE:
            raise PrepareRefused(f"study {study.name!r} is {study.get_status_display()}; only a live study can be paused")
        study.status = Study.Status.READY
        study.save(update_fields=["status"])
    return study


def study_close(*, study_id: int) -> Study:
    """End a study for good (``closed``): no new entries, no preparation, no publishing again.

    Participants whose pages are open may still finish (as when paused), so nobody who worked
    loses their pay; the results and exports stay. Refused while a preparation job is running
    (cancel it first). A closed study stays closed (calling this again is a no-op).
    """
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.status == Study.Status.CLOSED:
            return study
        if study.jobs.filter(kind=Job.Kind.PREPARE, status__in=ACTIVE).exists():
            raise PrepareRefused(f"study {study.name!r} is being prepared; cancel the preparation first")
        study.status = Study.Status.CLOSED
        study.save(update_fields=["status"])
    return study

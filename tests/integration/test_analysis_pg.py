"""The judgment loader on real PostgreSQL: binary COPY decodes to the same arrays as fetchall."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.db import connection

from studies.fixtures.synthetic_responses import synthetic_study_create
from studies.models import Assignment, Response, Study
from studies.selectors.judgments import study_judgment_columns, study_judgments_load
from studies.services.results import study_results_compute

pytestmark = [pytest.mark.services, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.fail(f"DATABASE_URL must point at PostgreSQL (vendor is {connection.vendor})", pytrace=False)


def test_binary_copy_matches_fetchall_and_the_orm():
    study = synthetic_study_create(n_workers=15, seed=12)
    other = synthetic_study_create(n_workers=5, seed=13)  # must not leak into the first study's arrays
    # NULLs: an unanswered discrimination response and a missing client time (server time used)
    first = Response.objects.filter(assignment__item__study=study).order_by("id").first()
    Response.objects.filter(pk=first.pk).update(client_response_ms=None)
    a = first.assignment
    Assignment.objects.filter(pk=a.pk).update(answered_at=a.shown_at + timedelta(milliseconds=1234))
    second = Response.objects.filter(assignment__item__study=study).order_by("id")[1]
    Response.objects.filter(pk=second.pk).update(correct=None, chosen_option=None)

    copy = study_judgment_columns(study_id=study.pk, method="copy")
    fetch = study_judgment_columns(study_id=study.pk, method="fetch")
    assert copy.keys() == fetch.keys()
    for name in copy:
        np.testing.assert_array_equal(copy[name], fetch[name], err_msg=name)
    expected = list(Response.objects.filter(assignment__item__study=study).order_by("id").values_list(
        "assignment__participant_id", "assignment__item_id", "correct", "chosen_option", "client_response_ms"))
    assert copy["participant_id"].tolist() == [e[0] for e in expected]
    assert copy["item_id"].tolist() == [e[1] for e in expected]
    assert copy["correct"].tolist() == [-1 if e[2] is None else int(e[2]) for e in expected]
    assert copy["response_ms"][0] == 1234
    assert copy["response_ms"][2:].tolist() == [e[4] for e in expected[2:]]
    assert copy["answered_ms"].min() > 1_700_000_000_000

    loaded = study_judgments_load(study=study)
    assert loaded.n_dropped == 1
    assert len(loaded.judgments) == len(expected) - 1
    assert other.pk != study.pk
    # the item-level right answer: the same on both transports, each judgment's item's correct_option
    fetched = study_judgments_load(study=study, method="fetch")
    np.testing.assert_array_equal(loaded.judgments.item_right_option, fetched.judgments.item_right_option)
    right = dict(study.items.values_list("id", "correct_option"))
    assert loaded.judgments.item_right_option.tolist() == [-1 if right[pk] is None else right[pk]
                                                           for pk in loaded.item_id]  # fmt: skip


def test_results_on_postgres_equal_results_on_fetched_arrays():
    study = synthetic_study_create(kind=Study.Kind.TRUST, quality=(1.0, 0.2), n_workers=12, seed=3)
    via_copy = study_results_compute(study=study, n_boot=100, loaded=study_judgments_load(study=study, method="copy"))
    via_fetch = study_results_compute(study=study, n_boot=100, loaded=study_judgments_load(study=study, method="fetch"))
    assert via_copy.analysis.with_exclusions.rows == via_fetch.analysis.with_exclusions.rows
    assert via_copy.analysis.without_exclusions.pairs == via_fetch.analysis.without_exclusions.pairs

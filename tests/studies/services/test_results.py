"""Results service on fixed data in the database, checked against independent references.

The references are computed here from the ORM (plain Python over the rows, a different path
from the selector's SQL) and from scipy, statsmodels and the ``krippendorff`` package.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import krippendorff
import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from studies.analysis import Judgments, discrimination_analysis
from studies.fixtures.synthetic_responses import synthetic_study_create
from studies.models import Assignment, ClassifierModel, Image, ImageSet, Item, Participant, Response, Study
from studies.selectors.judgments import study_judgments_load
from studies.services.results import study_results_compute, summary_rows

pytestmark = pytest.mark.django_db


def _orm_rows(study: Study) -> list[dict]:
    return list(
        Response.objects.filter(assignment__item__study=study).order_by("id").values(
            "correct", "score_model_a", "chosen_option", "client_response_ms",
            "assignment__participant_id", "assignment__item__method", "assignment__item__role",
            "assignment__item__image_id", "assignment__item__target_class", "assignment__participant__is_simulated",
        )
    )


def _expected_excluded(rows: list[dict], catch_threshold: float, median_seconds: float) -> dict[str, set[int]]:
    catch = defaultdict(list)
    times = defaultdict(list)
    for r in rows:
        pid = r["assignment__participant_id"]
        if r["assignment__item__role"] == "catch":
            catch[pid].append(bool(r["correct"]))
        times[pid].append(r["client_response_ms"])
    return {
        "catch_accuracy_below": {p for p, v in catch.items() if sum(v) / len(v) < catch_threshold},
        "median_trial_time_below": {p for p, v in times.items() if statistics.median(v) < median_seconds * 1000},
    }


def test_discrimination_table_matches_independent_references():
    study = synthetic_study_create(n_workers=24, trials_per_worker=12, seed=3)
    rows = _orm_rows(study)
    results = study_results_compute(study=study, n_boot=400)
    table = results.analysis.without_exclusions
    assert [r.method for r in table.rows] == ["gradcam", "guided_backprop"]
    for row in table.rows:
        mine = [r for r in rows if r["assignment__item__method"] == row.method and r["assignment__item__role"] == "main"]
        k, n = sum(bool(r["correct"]) for r in mine), len(mine)
        assert (row.n_correct, row.n_judgments) == (k, n)
        assert row.n_workers == len({r["assignment__participant_id"] for r in mine})
        low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert row.wilson_low == pytest.approx(low, abs=1e-12)
        assert row.wilson_high == pytest.approx(high, abs=1e-12)
        assert row.binomial_p == pytest.approx(sps.binomtest(k, n, 0.5).pvalue, rel=1e-12)
        # nominal alpha on the chosen option, units = the (image, target) pair
        units = sorted({(r["assignment__item__image_id"], r["assignment__item__target_class"]) for r in mine})
        workers = sorted({r["assignment__participant_id"] for r in mine})
        matrix = np.full((len(workers), len(units)), np.nan)
        for r in mine:
            unit = (r["assignment__item__image_id"], r["assignment__item__target_class"])
            matrix[workers.index(r["assignment__participant_id"]), units.index(unit)] = r["chosen_option"]
        assert row.alpha_nominal == pytest.approx(
            krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"), abs=1e-9
        )
        assert row.boot_low < row.accuracy < row.boot_high
    # The same numbers as the core run on arrays built independently from the ORM rows.
    main = [r for r in rows if r["assignment__item__role"] == "main"]
    j = Judgments.from_labels(
        method=[r["assignment__item__method"] for r in main],
        worker=[r["assignment__participant_id"] for r in main],
        item=[r["assignment__item__image_id"] * 1000 + r["assignment__item__target_class"] for r in main],
        method_order=["gradcam", "guided_backprop"],
        correct=np.array([bool(r["correct"]) for r in main]),
        answer=np.array([r["chosen_option"] for r in main]),
    )
    core = discrimination_analysis(j, n_boot=400, seed=study.seed)
    for mine, ref in zip(table.rows, core.rows):
        assert mine == ref
    assert table.pairs[0].p_boot_holm == pytest.approx(core.pairs[0].p_boot_holm)


def test_excluded_workers_leave_the_with_exclusions_table_only():
    study = synthetic_study_create(n_workers=20, n_careless=3, n_fast=2, seed=5)
    rows = _orm_rows(study)
    expected = _expected_excluded(rows, 0.75, 1.0)
    assert expected["catch_accuracy_below"] >= set(
        Participant.objects.filter(study=study).order_by("id").values_list("id", flat=True)[:3]
    )
    assert len(expected["median_trial_time_below"]) == 2
    excluded = expected["catch_accuracy_below"] | expected["median_trial_time_below"]
    results = study_results_compute(study=study, n_boot=50)
    report = results.analysis.exclusions
    main = [r for r in rows if r["assignment__item__role"] == "main"]
    for count in report.per_rule:
        flagged = expected[count.rule]
        assert count.n_workers == len(flagged)
        assert count.n_judgments == sum(r["assignment__participant_id"] in flagged for r in main)
    assert report.n_workers_excluded == len(excluded)
    kept = [r for r in main if r["assignment__participant_id"] not in excluded]
    for with_row, without_row in zip(results.analysis.with_exclusions.rows, results.analysis.without_exclusions.rows):
        method = with_row.method
        assert without_row.n_judgments == sum(r["assignment__item__method"] == method for r in main)
        assert with_row.n_judgments == sum(r["assignment__item__method"] == method for r in kept)
        assert with_row.n_correct == sum(bool(r["correct"]) for r in kept if r["assignment__item__method"] == method)
    # one excluded worker: their judgments are in the "without" table's n and not in "with"
    victim = min(excluded)
    victim_n = sum(r["assignment__participant_id"] == victim for r in main)
    assert victim_n > 0
    total_with = sum(r.n_judgments for r in results.analysis.with_exclusions.rows)
    total_without = sum(r.n_judgments for r in results.analysis.without_exclusions.rows)
    assert total_without - total_with == sum(r["assignment__participant_id"] in excluded for r in main)
    labels = {row["analysis"] for row in summary_rows(results)}
    assert labels == {"with_exclusions", "without_exclusions"}


def test_trust_table_signs_scores_towards_model_b():
    study = synthetic_study_create(kind=Study.Kind.TRUST, methods=("guided_gradcam", "guided_backprop"),
                                   quality=(1.3, 0.6), n_workers=24, seed=11, exclusion_rules=[])
    rows = [r for r in _orm_rows(study) if r["assignment__item__role"] == "main"]
    results = study_results_compute(study=study, n_boot=200)
    for row in results.analysis.without_exclusions.rows:
        towards_b = [-r["score_model_a"] for r in rows if r["assignment__item__method"] == row.method]
        assert row.n_judgments == len(towards_b)
        assert row.mean == pytest.approx(float(np.mean(towards_b)))
        assert row.wilcoxon_p == pytest.approx(sps.wilcoxon(towards_b, zero_method="wilcox").pvalue, rel=1e-9)
        counts = [towards_b.count(v) for v in (-2, -1, 0, 1, 2)]
        assert counts == [row.count_minus2, row.count_minus1, row.count_0, row.count_plus1, row.count_plus2]
        assert row.boot_low < row.mean < row.boot_high
    assert results.analysis.without_exclusions.rows[0].mean > results.analysis.without_exclusions.rows[1].mean


def test_trust_straight_lining_uses_the_screen_side():
    """Robot A is model A on some trials only: the selector's screen position undoes that."""
    study = synthetic_study_create(kind=Study.Kind.TRUST, quality=(1.0, 1.0), n_workers=6, seed=2, exclusion_rules=[])
    data = study_judgments_load(study=study)
    j = data.judgments
    rows = list(Response.objects.filter(assignment__item__study=study).order_by("id").values_list(
        "score_model_a", "assignment__model_a_shown_left", "assignment__item__role"))
    robot_a = [s if left else -s for s, left, role in rows if role == "main"]
    assert (j.option_position[~j.is_catch] == np.array(robot_a) + 2).all()
    assert (j.score_towards_a[~j.is_catch] == np.array([s for s, _, role in rows if role == "main"])).all()


def test_simulated_judgments_can_be_left_out():
    study = synthetic_study_create(n_workers=20, simulated_share=0.25, seed=8, exclusion_rules=[])
    simulated = set(Participant.objects.filter(study=study, is_simulated=True).values_list("id", flat=True))
    assert len(simulated) == 5
    n_sim = Assignment.objects.filter(participant_id__in=simulated, item__role="main").count()
    with_sim = study_results_compute(study=study, n_boot=20)
    without_sim = study_results_compute(study=study, n_boot=20, include_simulated=False)
    assert with_sim.n_simulated == with_sim.n_simulated_available == n_sim
    assert without_sim.n_simulated == 0
    assert without_sim.n_simulated_available == n_sim
    assert with_sim.n_judgments - without_sim.n_judgments == n_sim
    assert without_sim.n_workers == 15


def _paper_study() -> Study:
    """The paper's class-discrimination counts: 90 pairs x 9 ratings = 810 judgments a method."""
    counts = {"guided_gradcam": 496, "guided_backprop": 360, "deconvnet": 432, "deconv_gradcam": 489}
    image_set = ImageSet.objects.create(name="paper-voc", categories=["a", "b"])
    images = Image.objects.bulk_create(
        [Image(image_set=image_set, file=f"x/{k}.png", original_name=f"{k}.png", sha256=f"{k:064d}", width=2,
               height=1, categories=["a", "b"]) for k in range(90)]
    )
    model = ClassifierModel.objects.create(name="vgg16", arch="vgg16")
    study = Study.objects.create(name="paper", kind=Study.Kind.CLASS_DISCRIMINATION, methods=list(counts),
                                 model=model, image_set=image_set, exclusion_rules=[])
    items = Item.objects.bulk_create(
        [Item(study=study, method=m, image=im, target_class=0, options=["a", "b"], correct_option=0)
         for m in counts for im in images]
    )
    people = Participant.objects.bulk_create(
        [Participant(study=study, platform="link", platform_worker_id=f"w{k}", worker_hash=f"h{k}") for k in range(9)]
    )
    from django.utils import timezone

    now = timezone.now()
    assignments = Assignment.objects.bulk_create(
        [Assignment(participant=p, item=it, position=k, option_order=[0, 1], expires_at=now, shown_at=now,
                    answered_at=now) for k, it in enumerate(items) for p in people]
    )
    seen: dict[str, int] = defaultdict(int)
    responses = []
    for a, it in zip(assignments, [it for it in items for _ in people]):
        right = seen[it.method] < counts[it.method]
        seen[it.method] += 1
        responses.append(Response(assignment=a, chosen_option=0 if right else 1, correct=right, client_response_ms=2000))
    Response.objects.bulk_create(responses)
    return study


def test_paper_counts_give_the_published_accuracies():
    study = _paper_study()
    rows = {r.method: r for r in study_results_compute(study=study, n_boot=0).analysis.without_exclusions.rows}
    expected = {"guided_gradcam": 0.6123, "guided_backprop": 0.4444, "deconvnet": 0.5333, "deconv_gradcam": 0.6037}
    for method, accuracy in expected.items():
        assert rows[method].n_judgments == 810
        assert round(rows[method].accuracy, 4) == accuracy
    assert (round(rows["guided_gradcam"].wilson_low, 3), round(rows["guided_gradcam"].wilson_high, 3)) == (0.578, 0.645)

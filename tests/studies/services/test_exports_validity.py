"""Exports carry everything collected (issue 12, item 9): questionnaire answers with their question
text, per-trial comments, and the trust answer's scale position and wording; raw worker ids stay
out of every export that ``studies.view_study`` alone can read; docs/results.md lists every column.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from studies.designs.trust import Trust
from studies.fixtures.builders import make_worker_study
from studies.fixtures.synthetic_responses import synthetic_study_create
from studies.models import Assignment, Participant, Response, Study
from studies.selectors.participation import DEFAULT_WORDING
from studies.services.exports import EXPORT_KINDS, csv_lines, export_rows
from studies.services.responses import answer_score
from studies.web.http import form_token_make
from studies.web.results import VIEW_ONLY_EXPORTS

pytestmark = pytest.mark.django_db
trust_scale_position = Trust.scale_position  # was studies.services.exports.trust_scale_position

QUESTIONS = [
    {"name": "age", "label": "How old are you?", "type": "number", "required": True},
    {"name": "device", "label": "Which device did you use?", "type": "choice", "choices": ["phone", "computer"]},
    "Anything else you want to tell us?",
]
SCALE = DEFAULT_WORDING["scale"]


def read(study: Study, kind: str) -> pd.DataFrame:
    header, rows = export_rows(study=study, kind=kind)
    return pd.read_csv(io.StringIO("".join(csv_lines(header, rows))), keep_default_na=False, na_values=[""])


def token_from(response) -> str:  # type: ignore[no-untyped-def]
    return re.match(r"^/p/([^/]+)/", urlsplit(response["Location"]).path).group(1)


def post(client: Client, name: str, token: str, data: dict | None = None):  # type: ignore[no-untyped-def]
    return client.post(reverse(f"studies:worker-{name}", args=[token]), {"form_token": form_token_make(token), **(data or {})})


def run_trust_participant(study: Study, choices: list[int], comments: list[str], answers: dict[str, str]) -> str:
    """A worker who clicks the given scale positions with the given comments, then answers the questionnaire."""
    client = Client()
    token = token_from(client.get(reverse("studies:worker-entry", args=[study.slug])))
    post(client, "consent", token, {"decision": "agree", "consent_version": study.consent_version})
    practice = client.get(reverse("studies:worker-practice", args=[token])).content.decode()
    picks = dict.fromkeys(set(re.findall(r'name="(choice_[^"]+)"', practice)), "2")
    assert b'data-practice-result="passed"' in post(client, "practice", token, picks).content
    for choice, comment in zip(choices, comments, strict=True):
        page = client.get(reverse("studies:worker-home", args=[token]))
        assert b"data-trial-form" in page.content
        assignment = Assignment.objects.filter(participant__token=token, status=Assignment.Status.LEASED).order_by("position").first()
        assert post(client, "answer", token, {"assignment": assignment.token, "choice": str(choice), "comment": comment}).status_code == 302
    assert b"data-questionnaire-submit" in client.get(reverse("studies:worker-home", args=[token])).content
    assert post(client, "questionnaire", token, answers).status_code == 302
    assert post(client, "complete", token).status_code == 302
    return token


@pytest.fixture
def trust_study() -> tuple[Study, list[str]]:
    study = make_worker_study(kind=Study.Kind.TRUST, n_main=10, n_practice=1, trials_per_participant=5,
                              judgments_per_item=2, questionnaire=QUESTIONS, platform=Study.Platform.LINK)  # fmt: skip
    tokens = [
        run_trust_participant(study, [0, 1, 2, 3, 4], ["=1+1", "", "left one", "b, \"quoted\"", "x"],
                              {"age": "31", "device": "computer", "q3": "@nothing"}),
        run_trust_participant(study, [4, 4, 0, 2, 1], ["", "", "", "", "no idea"], {"age": "45"}),
    ]  # fmt: skip
    return study, tokens


def test_tidy_trust_rows_carry_scale_position_label_and_comment(trust_study):
    study, tokens = trust_study
    frame = read(study, "tidy")
    assert len(frame) == 10
    clicked = {tokens[0]: [0, 1, 2, 3, 4], tokens[1]: [4, 4, 0, 2, 1]}
    for token, choices in clicked.items():
        person = Participant.objects.get(token=token)
        rows = frame[frame["worker_hash"] == person.worker_hash].sort_values("trial_position")
        assert rows["answer_option"].astype(int).tolist() == choices
        assert rows["answer_position"].astype(int).tolist() == choices
        assert rows["answer_label"].tolist() == [SCALE[c] for c in choices]
        for _, row in rows.iterrows():  # the stored score is what answer_score makes of the exported position
            a_left = row["robot_a_is_model_a"]
            assert answer_score(study=study, item=Assignment.objects.get(
                participant=person, position=row["trial_position"]).item, option_order=[], model_a_shown_left=bool(a_left),
                choice=int(row["answer_option"])).score_model_a == row["score_model_a"]  # fmt: skip
    first = frame[frame["worker_hash"] == Participant.objects.get(token=tokens[0]).worker_hash].sort_values("trial_position")
    assert first["comment"].fillna("").tolist() == ["'=1+1", "", "left one", 'b, "quoted"', "x"]
    # Questionnaire answers are participant-level columns, repeated on each of the participant's rows.
    assert {"q_age", "q_device", "q_q3"} <= set(frame.columns)
    assert frame.columns[-1] == "is_simulated"
    assert set(first["q_age"]) == {31.0}
    assert set(first["q_device"]) == {"computer"}
    assert set(first["q_q3"]) == {"'@nothing"}
    second = frame[frame["worker_hash"] == Participant.objects.get(token=tokens[1]).worker_hash]
    assert second["q_device"].isna().all()


def test_trust_scale_position_inverts_answer_score():
    study = Study(kind=Study.Kind.TRUST)
    for a_left in (True, False, None):
        for choice in range(5):
            score = answer_score(study=study, item=_Item(), option_order=[], model_a_shown_left=a_left, choice=choice)
            assert trust_scale_position(score_model_a=score.score_model_a, model_a_shown_left=a_left) == choice
    assert trust_scale_position(score_model_a=None, model_a_shown_left=True) is None


class _Item:
    correct_option = None


def test_mturk_wide_carries_option_label_comment_and_questionnaire(trust_study):
    study, tokens = trust_study
    frame = read(study, "mturk")
    assert len(frame) == 2
    for field in ("item", "method", "answer", "answer_option", "answer_label", "correct", "rt_ms", "comment"):
        assert f"Answer.trial_05_{field}" in frame.columns
    assert ["Answer.q_age", "Answer.q_device", "Answer.q_q3"] == [c for c in frame.columns if c.startswith("Answer.q_")]
    person = Participant.objects.get(token=tokens[0])
    row = frame[frame["WorkerId"] == person.platform_worker_id].iloc[0]
    assert [int(row[f"Answer.trial_{k:02d}_answer_option"]) for k in range(1, 6)] == [0, 1, 2, 3, 4]
    assert [row[f"Answer.trial_{k:02d}_answer_label"] for k in range(1, 6)] == SCALE
    assert row["Answer.trial_03_comment"] == "left one"
    assert row["Answer.q_age"] == 31
    scores = Response.objects.filter(assignment__participant=person).order_by("assignment__position")
    assert [int(row[f"Answer.trial_{k:02d}_answer"]) for k in range(1, 6)] == [r.score_model_a for r in scores]


def test_questionnaire_export_is_long_with_question_text_and_no_raw_ids(trust_study):
    study, tokens = trust_study
    frame = read(study, "questionnaire")
    assert list(frame.columns) == ["study", "worker_hash", "session_hash", "platform", "participant_status", "submitted_at",
                                   "question", "question_text", "question_type", "answer", "is_simulated"]  # fmt: skip
    assert len(frame) == 2 * 3
    first = frame[frame["worker_hash"] == Participant.objects.get(token=tokens[0]).worker_hash]
    assert first["question"].tolist() == ["age", "device", "q3"]
    assert first["question_text"].tolist() == ["How old are you?", "Which device did you use?",
                                               "Anything else you want to tell us?"]  # fmt: skip
    assert first["question_type"].tolist() == ["number", "choice", "text"]
    assert first["answer"].tolist() == ["31.0", "computer", "'@nothing"]


def test_view_only_exports_and_the_pack_hold_no_raw_worker_ids(client, django_user_model, trust_study):
    study, _ = trust_study
    mturk = synthetic_study_create(n_workers=4, n_careless=0, n_fast=0, seed=3)
    Participant.objects.filter(study=mturk).update(questionnaire={"answers": {"q1": "fine"}, "submitted_at": "2026-01-05T10:00:00+00:00"})
    user = django_user_model.objects.create_user("viewer", "v@example.org", "pw-for-tests-only", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_study"))
    client.force_login(user)
    assert "questionnaire" in VIEW_ONLY_EXPORTS
    for target in (study, mturk):
        raw = set()
        for person in Participant.objects.filter(study=target):
            raw |= {v for v in (person.platform_worker_id, person.session_key, person.mturk_assignment_id,
                                person.prolific_session_id, person.token) if v}  # fmt: skip
        for kind in sorted(VIEW_ONLY_EXPORTS):
            response = client.get(reverse("studies:results_export", args=[target.slug, kind]))
            assert response.status_code == 200, kind
            body = b"".join(response.streaming_content).decode()
            assert not [r for r in raw if r in body], kind
        pack = client.get(reverse("studies:results_pack", args=[target.slug]))
        archive = zipfile.ZipFile(io.BytesIO(b"".join(pack.streaming_content)))
        assert "exports/questionnaire.csv" in archive.namelist()
        for name in archive.namelist():
            text = archive.read(name).decode()
            assert not [r for r in raw if r in text], name
        assert client.get(reverse("studies:results_export", args=[target.slug, "mturk"])).status_code == 403
    archive = zipfile.ZipFile(io.BytesIO(b"".join(client.get(reverse("studies:results_pack", args=[study.slug])).streaming_content)))
    config = json.loads(archive.read("study.json"))
    assert [q["text"] for q in config["questions"]] == ["How old are you?", "Which device did you use?",
                                                        "Anything else you want to tell us?"]  # fmt: skip
    assert config["scale"] == SCALE
    questionnaire = pd.read_csv(io.BytesIO(archive.read("exports/questionnaire.csv")))
    assert len(questionnaire) == 6
    tidy = pd.read_csv(io.BytesIO(archive.read("exports/tidy.csv")))
    assert {"comment", "q_age"} <= set(tidy.columns)
    assert "exports/questionnaire.csv" in archive.read("README.txt").decode() or "questionnaire.csv" in archive.read("README.txt").decode()


def test_discrimination_tidy_keeps_option_semantics_and_adds_comments():
    study = synthetic_study_create(n_workers=4, n_careless=0, n_fast=0, seed=5, exclusion_rules=[])
    response = Response.objects.filter(assignment__item__study=study, assignment__item__role="main").order_by("id").first()
    Response.objects.filter(pk=response.pk).update(comment="the dog's ear")
    frame = read(study, "tidy")
    row = frame.iloc[0]
    assert row["comment"] == "the dog's ear"
    assert int(row["answer_option"]) == response.chosen_option
    assert row["answer_label"] == response.assignment.item.options[response.chosen_option]
    assert not [c for c in frame.columns if c.startswith("q_")], "no questionnaire: no q_ columns"


def test_docs_list_every_column_of_every_export(trust_study):
    """docs/results.md names every column (patterns for the per-rule, per-question and per-trial ones)."""
    study, _ = trust_study
    Study.objects.filter(pk=study.pk).update(exclusion_rules=[{"rule": "catch_accuracy_below", "threshold": 0.5}])
    study.refresh_from_db()
    discrimination = synthetic_study_create(n_workers=3, n_careless=0, n_fast=0, seed=4)
    docs = (Path(settings.BASE_DIR) / "docs" / "results.md").read_text()
    patterns = ((r"^exclude_.+$", "exclude_<rule>"), (r"^q_.+$", "q_<name>"), (r"^Answer\.q_.+$", "Answer.q_<name>"),
                (r"^Answer\.trial_\d\d_(.+)$", None))  # fmt: skip
    for kind, target in [(kind, target) for kind in EXPORT_KINDS for target in (study, discrimination)]:
        header, _ = export_rows(study=target, kind=kind)
        for column in header:
            name = column
            for pattern, documented in patterns:
                match = re.match(pattern, column)
                if match:
                    name = documented or f"Answer.trial_NN_{{{match.group(1)}}}"
                    if documented is None:
                        assert re.search(rf"Answer\.trial_NN_\{{[^}}]*\b{match.group(1)}\b", docs), (kind, column)
                        name = ""
                    break
            if name:
                assert f"`{name}`" in docs, (kind, column)


# --- the results page (issue 12, item 10) -------------------------------------------------------------


def _figures(kind: str):  # type: ignore[no-untyped-def]
    from studies.services.results import study_results_compute
    from studies.web import plots

    if kind == "trust":
        study = synthetic_study_create(kind=Study.Kind.TRUST, methods=("guided_backprop", "guided_gradcam", "gradcam"),
                                       quality=(1.2, 0.4, -0.3), n_workers=12, seed=9)  # fmt: skip
        rows = study_results_compute(study=study).table(with_exclusions=True).rows
        names = {"model_a": "a-rather-long-model-name-efficientnet_lite0-v1",
                 "model_b": "another-rather-long-model-name-efficientnet_lite2-v1"}  # fmt: skip
        return study, [plots.trust_figure(rows, title="t", **names), plots.answers_figure(rows, title="t", **names)]
    study = synthetic_study_create(methods=("gradcam", "guided_backprop", "counterfactual_gradcam"),
                                   quality=(0.8, 0.9, 0.2), n_workers=12, seed=3)  # fmt: skip
    rows = study_results_compute(study=study).table(with_exclusions=True).rows
    return study, [plots.accuracy_figure(rows, title="t"), plots.answers_figure(rows, title="t")]


@pytest.mark.parametrize("kind", ["discrimination", "trust"])
def test_plots_one_axes_legend_clear_of_data_labels_inside_and_apart(kind):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _, figures = _figures(kind)
    for fig in figures:
        FigureCanvasAgg(fig).draw()  # lays the figure out at its own dpi, the one measured below
        renderer = fig.canvas.get_renderer()
        assert len(fig.axes) == 1, "one plot per figure"
        ax = fig.axes[0]
        area = ax.get_window_extent(renderer)
        whole = fig.bbox
        legends = fig.legends + ([ax.get_legend()] if ax.get_legend() else [])
        assert legends, "every plot has a legend"
        for legend in legends:
            box = legend.get_window_extent(renderer)
            assert not box.overlaps(area), "the legend must not cover the plotting area"
            assert whole.x0 <= box.x0, "the legend fits in the figure"
            assert box.x1 <= whole.x1, "the legend fits in the figure"
        texts = [ax.xaxis.label, ax.title, *ax.get_yticklabels(), *ax.get_xticklabels()]
        for text in texts:
            if text.get_text():
                box = text.get_window_extent(renderer)
                assert whole.x0 <= box.x0, f"{text.get_text()!r} runs off the figure"
                assert box.x1 <= whole.x1, f"{text.get_text()!r} runs off the figure"
        ticks = [t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()]
        for upper, lower in zip(ticks, ticks[1:], strict=False):
            assert not upper.overlaps(lower), "method labels overlap"


def test_trust_page_names_models_a_and_b_and_shows_each_plot_once(client, django_user_model):
    from studies.web import plots

    study = synthetic_study_create(kind=Study.Kind.TRUST, quality=(1.2, 0.4), n_workers=10, seed=9)
    user = django_user_model.objects.create_superuser("admin", "a@example.org", "pw-for-tests-only")
    client.force_login(user)
    page = client.get(reverse("studies:results", args=[study.slug])).content.decode()
    a, b = study.model_pair.model_a.name, study.model_pair.model_b.name
    assert f"Model A = <strong>{a}</strong> · Model B = <strong>{b}</strong>" in page
    assert f"Mean score (towards model B = {b})" in page
    assert f"A = model A ({a}), B = model B ({b})" in page
    assert "<th>Method 1</th><th>Method 2</th>" in page
    assert page.count('id="plot-scores"') == page.count('id="plot-answers"') == 1
    scores = client.get(reverse("studies:results_plot", args=[study.slug, "scores", "svg"])).content
    answers = client.get(reverse("studies:results_plot", args=[study.slug, "answers", "svg"])).content
    assert scores != answers, "the trust plot is no longer drawn twice"
    assert b"mean score towards model B" in scores or b"mean score" in scores
    assert plots.TRUST_LABELS[1].encode() not in scores  # the stacked answers are only in "answers"
    assert plots.TRUST_LABELS[1].encode() in answers
    assert "low by design" not in page


def test_discrimination_page_notes_methods_low_by_design(client, django_user_model):
    study = synthetic_study_create(methods=("gradcam", "counterfactual_gradcam"), quality=(0.8, 0.2), n_workers=8, seed=2)
    user = django_user_model.objects.create_superuser("admin", "a@example.org", "pw-for-tests-only")
    client.force_login(user)
    page = client.get(reverse("studies:results", args=[study.slug])).content.decode()
    assert f"Model: <strong>{study.model.name}</strong>" in page
    assert 'id="design-notes"' in page
    assert "counterfactual_gradcam\u2020" in page
    assert "points at the other category" in page
    assert "gradcam\u2020" not in page.replace("counterfactual_gradcam\u2020", "")

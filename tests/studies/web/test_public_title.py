"""Workers see the study's public title, never its internal name (issue 12, item 1).

A study (and its models, pair and image set) named with a unique marker is walked through the
whole worker flow, HTML and JSON API: entry, consent, the device gate, declined, instructions,
practice (failed, then passed), practice feedback, trials (discrimination and trust, catch
included), an answer refused, questionnaire, finish, done, entry refusals, the MTurk preview.
Every response (body and headers) is checked for the marker, for the method name and for the
source images' file names; every worker template is rendered at least once (by the walk, or
directly with a full context when another change added a page the walk does not reach).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from studies.fixtures.builders import make_worker_study
from studies.models import Assignment, Item, Participant, Study
from studies.selectors.participation import example_view, platform_setup, study_wording
from studies.services.participation import completion_for, questionnaire_questions
from studies.web.http import form_token_make

pytestmark = pytest.mark.django_db

MARKER = "INTERNAL-NAME-7f3a (biased vs unbiased)"
#: Fragments of the internal names (study, models, pair, image set) and of the design that must never reach a worker.
FORBIDDEN = ("internal-name-7f3a", "biased vs unbiased", "biased", "gradcam", "grad-cam", "backprop", "deconv",
             "counterfactual", "occlusion", "saliency")
#: The explanation methods the marked studies' items are given (their names must not reach a worker either).
METHODS = ("guided_backprop", "counterfactual_gradcam", "deconvnet", "occlusion", "gradcam")
#: Source image file names (``img0.png`` ...) could name a category.
IMAGE_NAME = re.compile(r"img\d+\.png")
PUBLIC_TITLE = "Image study Q"
PUBLIC_DESCRIPTION = "Look at pictures and say what you see."
QUESTIONS = [{"name": "age", "label": "Age", "type": "number", "required": True}, "Any comments?"]
TEMPLATES = Path(settings.BASE_DIR) / "templates" / "studies"
MTURK = {"assignmentId": "3ASSIGN7F3A", "hitId": "3HIT7F3A", "workerId": "A7F3AWORKER",
         "turkSubmitTo": "https://workersandbox.mturk.com"}  # fmt: skip


def worker_templates() -> set[str]:
    """Every page template of the worker flow (results pages are staff-only and live in ``results/``)."""
    return {f"studies/{path.name}" for path in TEMPLATES.glob("*.html")}


def assert_clean(text: str, where: str) -> None:
    lowered = text.lower()
    for fragment in FORBIDDEN:
        assert fragment not in lowered, f"{where}: {fragment!r} leaks to the worker"
    assert not IMAGE_NAME.search(text), f"{where}: a source image name leaks to the worker"


class Walker:
    """A test client whose every response is checked for leaks; it records the templates rendered."""

    def __init__(self) -> None:
        self.client = Client()
        self.rendered: set[str] = set()
        self.statuses: list[int] = []

    def _check(self, response, where: str):  # type: ignore[no-untyped-def]
        self.statuses.append(response.status_code)
        self.rendered |= {t.name for t in getattr(response, "templates", []) or [] if t.name}
        if not getattr(response, "streaming", False) and response.get("Content-Type", "").startswith(("text/", "application/json")):
            assert_clean(response.content.decode(), where)
        for header, value in response.items():
            assert_clean(f"{header}: {value}", f"{where} header")
        return response

    def get(self, path: str, data: dict | None = None, **extra):  # type: ignore[no-untyped-def]
        return self._check(self.client.get(path, data or {}, **extra), f"GET {path}")

    def post_form(self, name: str, token: str, data: dict | None = None):  # type: ignore[no-untyped-def]
        path = reverse(f"studies:worker-{name}", args=[token])
        payload = {"form_token": form_token_make(token), **(data or {})}
        return self._check(self.client.post(path, payload), f"POST {path}")

    def api(self, method: str, path: str, body: dict | None = None, token: str = ""):  # type: ignore[no-untyped-def]
        headers = {"HTTP_X_PARTICIPANT_TOKEN": token} if token else {}
        data = json.dumps(body) if body is not None else None
        call = getattr(self.client, method.lower())
        return self._check(call(path, data=data, content_type="application/json", **headers), f"{method} {path}")


def marked_study(**kwargs) -> Study:  # type: ignore[no-untyped-def]
    study = make_worker_study(name=MARKER, **kwargs)
    Study.objects.filter(pk=study.pk).update(public_title=PUBLIC_TITLE, public_description=PUBLIC_DESCRIPTION,
                                             methods=list(METHODS))  # fmt: skip
    for index, item in enumerate(Item.objects.filter(study=study).order_by("id")):
        Item.objects.filter(pk=item.pk).update(method=METHODS[index % len(METHODS)])
    study.refresh_from_db()
    assert MARKER in study.name
    assert MARKER in (study.model or study.model_pair.model_a).name
    assert MARKER in study.image_set.name
    return study


def token_from(response) -> str:  # type: ignore[no-untyped-def]
    match = re.match(r"^/p/([^/]+)/", urlsplit(response["Location"]).path)
    assert match, response["Location"]
    return match.group(1)


def practice_choices(page: str, study: Study, *, right: bool) -> dict[str, str]:
    """Answers for the practice page as shown: the right (or a wrong) option of each question."""
    answers: dict[str, str] = {}
    radios = re.findall(r'name="choice_([^"]+)" value="(\d+)"[^>]*>\s*(?:<kbd[^>]*>\d+</kbd>\s*)?<span>([^<]*)</span>', page)
    assert radios, "no practice question found on the page"
    for public_id, value, label in radios:
        item = Item.objects.get(study=study, public_id=public_id)
        if item.correct_option is None or not item.options:  # no single right answer: any choice counts
            answers.setdefault(f"choice_{public_id}", value)
            continue
        is_right = label == str(item.options[item.correct_option])
        if is_right == right:
            answers[f"choice_{public_id}"] = value
    return answers


def walk_html(walker: Walker, study: Study, entry_params: dict | None = None) -> str:
    """Enter, consent, fail and pass the practice, answer every trial (one answer refused), questionnaire, finish."""
    home = lambda token: reverse("studies:worker-home", args=[token])  # noqa: E731
    entered = walker.get(reverse("studies:worker-entry", args=[study.slug]), entry_params)
    assert entered.status_code == 302
    token = token_from(entered)
    consent = walker.get(home(token))
    assert b"data-agree" in consent.content
    assert PUBLIC_TITLE in consent.content.decode()
    assert PUBLIC_DESCRIPTION in consent.content.decode()
    assert f"<title>{PUBLIC_TITLE}</title>" in consent.content.decode()
    assert walker.post_form("consent", token, {"decision": "agree", "consent_version": study.consent_version}).status_code == 302
    instructions = walker.get(home(token))
    assert f"<title>{PUBLIC_TITLE}</title>" in instructions.content.decode()
    practice_url = reverse("studies:worker-practice", args=[token])
    page = walker.get(practice_url).content.decode()
    if study.kind == Study.Kind.CLASS_DISCRIMINATION:
        failed = walker.post_form("practice", token, practice_choices(page, study, right=False))
        assert b'data-practice-result="failed"' in failed.content
        page = walker.get(practice_url).content.decode()
    passed = walker.post_form("practice", token, practice_choices(page, study, right=True))
    assert b'data-practice-result="passed"' in passed.content
    refused_once = False
    for _ in range(50):
        trial = walker.get(home(token))
        if b"data-trial-form" not in trial.content:
            break
        assert f"<title>{PUBLIC_TITLE}</title>" in trial.content.decode()
        assignment = Assignment.objects.filter(participant__token=token, status=Assignment.Status.LEASED).order_by("position").first()
        for side in ("main",) if study.kind == Study.Kind.CLASS_DISCRIMINATION else ("left", "right"):
            image = walker.get(reverse("studies:worker-stimulus", args=[token, assignment.token, side]))
            assert image.status_code == 200
        if not refused_once:
            assert walker.post_form("answer", token, {"assignment": assignment.token, "choice": "9"}).status_code == 400
            refused_once = True
        answer = walker.post_form("answer", token, {"assignment": assignment.token, "choice": "0", "comment": "ok"})
        assert answer.status_code == 302
    page = walker.get(home(token))
    if b"data-questionnaire-submit" in page.content:
        assert walker.post_form("questionnaire", token, {"age": "abc"}).status_code == 400
        assert walker.post_form("questionnaire", token, {"age": "31", "q2": "fine"}).status_code == 302
        page = walker.get(home(token))
    assert b"data-finish" in page.content
    done = walker.post_form("complete", token)
    assert done.status_code == 302
    assert b"data-completion-code" in walker.get(done["Location"]).content
    again = walker.get(reverse("studies:worker-entry", args=[study.slug]), entry_params)
    assert again.status_code == 302
    assert again["Location"].endswith("/done")
    return token


def walk_api(walker: Walker, study: Study) -> None:
    """The same flow over the JSON API; every payload is checked by the walker."""
    entered = walker.api("POST", f"/api/v1/studies/{study.slug}/enter", {}).json()
    assert entered["study"]["title"] == PUBLIC_TITLE
    assert entered["study"]["description"] == PUBLIC_DESCRIPTION
    assert "name" not in entered["study"]
    token = entered["participant_token"]
    walker.api("GET", "/api/v1/participant", token=token)
    walker.api("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": study.consent_version}, token=token)
    practice = walker.api("GET", "/api/v1/participant/practice", token=token).json()
    answers = {}
    for view in practice["trials"]:
        item = Item.objects.get(study=study, public_id=view["token"])
        answers[view["token"]] = view["options"].index(item.options[item.correct_option]) if view["options"] else 2
    assert walker.api("POST", "/api/v1/participant/practice", {"answers": answers}, token=token).json()["passed"]
    while True:
        trial = walker.api("GET", "/api/v1/participant/trial", token=token).json()["trial"]
        if trial is None:
            break
        for image in trial["images"]:
            assert walker.get(urlsplit(image["url"]).path).status_code == 200
        walker.api("POST", "/api/v1/participant/trial", {"assignment": trial["token"], "choice": 1, "comment": "x"}, token=token)
    if study.questionnaire:
        walker.api("POST", "/api/v1/participant/questionnaire", {"answers": {"age": "abc"}}, token=token)
        walker.api("POST", "/api/v1/participant/questionnaire", {"answers": {"age": 40}}, token=token)
    completed = walker.api("POST", "/api/v1/participant/complete", token=token)
    assert completed.status_code == 200, completed.content
    walker.api("GET", "/api/v1/participant", token=token)
    walker.api("POST", "/api/v1/participant/trial", {"assignment": "nope", "choice": 0}, token=token)


def full_context(study: Study, participant: Participant) -> dict:
    """Everything any worker page reads, for rendering a template the walk did not reach."""
    items = list(Item.objects.filter(study=study, role=Item.Role.PRACTICE))
    views = [example_view(study=study, item=item) for item in items]
    return {
        "study": study, "participant": participant, "form_token": form_token_make(participant.token),
        "wording": study_wording(study), "example": example_view(study=study, item=items[0] if items else None),
        "n_practice": len(items), "trials": views, "trial": views[0], "rows": [(v, None, None) for v in views],
        "result": None, "questions": questionnaire_questions(study=study), "state": None,
        "completion": completion_for(participant), "message": "A message.", "error": "An error.",
    }  # fmt: skip


def test_worker_pages_and_api_never_show_the_internal_name():
    walker = Walker()
    discrimination = marked_study(n_main=6, n_catch=1, n_practice=2, trials_per_participant=3, questionnaire=QUESTIONS)
    walk_html(walker, discrimination)
    walker.client.cookies.clear()
    trust = marked_study(kind=Study.Kind.TRUST, n_main=6, n_catch=1, n_practice=1, trials_per_participant=2,
                         platform=Study.Platform.MTURK)  # fmt: skip
    walk_html(walker, trust, MTURK)
    walker.client.cookies.clear()
    walk_api(walker, marked_study(n_main=4, n_practice=1, trials_per_participant=2, questionnaire=QUESTIONS))
    walker.client.cookies.clear()
    walk_api(walker, marked_study(kind=Study.Kind.TRUST, n_main=4, n_practice=1, trials_per_participant=2))

    # Declined, device-gated consent, entry refusals, a full study, the MTurk preview (HTML and API).
    walker.client.cookies.clear()
    declining = marked_study()
    token = token_from(walker.get(reverse("studies:worker-entry", args=[declining.slug])))
    walker.post_form("consent", token, {"decision": "decline", "consent_version": declining.consent_version})
    assert b"data-declined" in walker.get(reverse("studies:worker-home", args=[token])).content
    gated = marked_study()
    Study.objects.filter(pk=gated.pk).update(min_viewport_width=1024, min_viewport_height=600)
    walker.client.cookies.clear()
    token = token_from(walker.get(reverse("studies:worker-entry", args=[gated.slug])))
    gate = walker.get(reverse("studies:worker-home", args=[token]))
    assert b"data-device-gate" in gate.content
    refused = walker.post_form("consent", token, {"decision": "agree", "consent_version": gated.consent_version,
                                                  "viewport_width": "390", "viewport_height": "844"})  # fmt: skip
    assert refused.status_code == 400
    assert b"larger screen" in refused.content
    api_token = walker.api("POST", f"/api/v1/studies/{gated.slug}/enter", {}).json()["participant_token"]
    assert walker.api("POST", "/api/v1/participant/consent", {"agree": True, "consent_version": "1"},
                      token=api_token).status_code == 400  # fmt: skip
    closed = marked_study(status=Study.Status.READY)
    assert walker.get(reverse("studies:worker-entry", args=[closed.slug])).status_code == 403
    assert walker.api("POST", f"/api/v1/studies/{closed.slug}/enter", {}).status_code == 403
    mturk = marked_study(platform=Study.Platform.MTURK, n_practice=1)
    entry = reverse("studies:worker-entry", args=[mturk.slug])
    assert walker.get(entry).status_code == 403  # wrong platform
    assert walker.get(entry, {**MTURK, "turkSubmitTo": "https://evil.example"}).status_code == 400
    preview = walker.get(entry, {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "3HIT7F3A"})
    assert b"data-preview" in preview.content
    assert PUBLIC_TITLE.encode() in preview.content
    for image in re.findall(r'<img src="([^"]+)"', preview.content.decode()):
        assert walker.get(image).status_code == 200
    api_preview = walker.api("POST", f"/api/v1/studies/{mturk.slug}/enter",
                             {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "3HIT7F3A"}).json()  # fmt: skip
    assert api_preview["preview"] is True
    assert api_preview["study"]["title"] == PUBLIC_TITLE
    full = marked_study(n_main=0)
    walker.client.cookies.clear()
    assert walker.get(reverse("studies:worker-entry", args=[full.slug])).status_code == 403
    walker.get("/api/v1/openapi.json")
    assert 200 in walker.statuses
    assert 400 in walker.statuses
    assert 403 in walker.statuses

    # Every worker template: rendered by the walk, or here with a full context (a page added later).
    participant = Participant.objects.filter(study=discrimination, status=Participant.Status.COMPLETED).first()
    for name in sorted(worker_templates() - walker.rendered):
        assert_clean(render_to_string(name, full_context(discrimination, participant)), name)
    reached = walker.rendered & worker_templates()
    assert {"studies/consent.html", "studies/instructions.html", "studies/practice.html", "studies/practice_feedback.html",
            "studies/trial.html", "studies/questionnaire.html", "studies/finish.html", "studies/done.html",
            "studies/declined.html", "studies/refused.html", "studies/preview.html"} <= reached  # fmt: skip


def test_worker_templates_never_read_internal_names():
    """A static guard: no worker template reads the study's name, a model or a method."""
    pattern = re.compile(r"\{[{%][^}]*\b(study\.name|\.name\b(?<!q\.name)|model|method)\b[^}]*[}%]\}")
    for name in sorted(worker_templates()):
        source = (TEMPLATES / Path(name).name).read_text()
        found = [m.group(0) for m in pattern.finditer(source) if "q.name" not in m.group(0)]
        assert not found, f"{name} reads {found}"


def test_platform_snippets_use_the_public_title():
    study = marked_study(platform=Study.Platform.MTURK)
    setup = platform_setup(study=study, base_url="https://studies.example.org")
    assert setup["title"] == PUBLIC_TITLE
    assert setup["description"] == PUBLIC_DESCRIPTION
    for key, value in setup.items():
        assert_clean(value, f"platform_setup[{key}]")


def test_demo_public_titles_give_nothing_away():
    from studies.fixtures.worlds import WorldRows, demo_studies_ensure
    from studies.models import ClassifierModel, ImageSet, ModelPair

    def world(name: str, keys: tuple[str, str], sets: tuple[str, ...]) -> WorldRows:
        models = {key: ClassifierModel.objects.create(name=f"{name}-{key}", arch="resnet18", class_names=["a", "b"])
                  for key in keys}  # fmt: skip
        pair = ModelPair.objects.create(name=f"{name}-pair", model_a=models[keys[0]], model_b=models[keys[1]])
        image_sets = {key: ImageSet.objects.create(name=f"{name}-{key}", categories=["a", "b"]) for key in sets}
        return WorldRows(name=name, models=models, pair=pair, image_sets=image_sets)

    photos = world("photos", ("efficientnet_lite0", "efficientnet_lite2"), ("photos",))
    synthetic = world("synthetic", ("unbiased", "biased"), ("clean", "cued"))
    studies = demo_studies_ensure(synthetic=synthetic, photos=photos)
    # The four Grad-CAM studies, then the newer designs' (issue #16) that these worlds can give.
    titles = [s.public_title for s in studies]
    assert titles[:4] == ["Image study A", "Image study B", "Image study C", "Image study D"]
    assert titles == [f"Image study {letter}" for letter in "ABCDEFGH"[:len(titles)]]
    for study in studies:
        assert not re.search(r"robot|reasonable|bias|synthetic|photo|lite|see\?|vs|agree|distinct|simulat|decision|"
                             r"arm|control|\bAI\b", study.public_title, re.IGNORECASE)  # fmt: skip
    # A demo database from before public titles (the default title) gets the demo's titles on the next run.
    Study.objects.update(public_title="Image study")
    again = demo_studies_ensure(synthetic=synthetic, photos=photos)
    assert [s.pk for s in again] == [s.pk for s in studies]
    assert sorted(Study.objects.values_list("public_title", flat=True)) == [s.public_title for s in studies]

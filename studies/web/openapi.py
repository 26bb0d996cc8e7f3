"""The OpenAPI 3.0 description of the worker JSON API (served at ``/api/v1/openapi.json``).

Hand-written, kept next to ``studies/web/api.py``; ``tests/studies/web/test_api.py`` validates
real responses of a whole study against it. What differs between study designs comes from the
design registry (``studies.designs``): the ``kind`` enum is the registered designs' names, the
trial payload's answer fields are the union of each design's ``trial_schema()`` and an answer's
``choice`` merges their ``answer_schema()``. :func:`schema` builds the document from the designs
registered when it is called (the served one); :data:`SCHEMA` is it as built at import.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

from studies.designs.base import Side
from studies.designs.registry import designs


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _json(_ref("Error"), "error")
STRING = {"type": "string"}
NULLABLE_STRING = {"type": "string", "nullable": True}

_errors = {
    "400": ERROR,
    "403": _json(_ref("Error"), "missing or unknown participant token, or entry refused"),
    "405": ERROR,
    "409": _json(_ref("Error"), "step not allowed in the participant's current stage"),
}


def _op(summary: str, ok: dict[str, Any], *, body: dict[str, Any] | None = None, auth: bool = True,
        extra: dict[str, Any] | None = None, op_id: str = "") -> dict[str, Any]:  # fmt: skip
    operation: dict[str, Any] = {"summary": summary, "operationId": op_id, "responses": {**ok, **_errors, **(extra or {})}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if not auth:
        operation["security"] = []
    return operation


STAGES = ["consent", "declined", "practice", "screened_out", "trial", "questionnaire", "finish", "full", "completed"]

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": STRING, "detail": STRING},
    },
    "Completion": {
        "type": "object",
        "required": ["code", "platform", "mturk_submit_url", "mturk_assignment_id", "prolific_redirect_url"],
        "properties": {
            "code": {"type": "string", "description": "the completion code to give to the platform"},
            "platform": {"type": "string", "enum": ["mturk", "prolific", "link"]},
            "mturk_submit_url": {"type": "string", "description": "POST assignmentId here (MTurk), else empty"},
            "mturk_assignment_id": STRING,
            "prolific_redirect_url": {"type": "string", "description": "send the worker here (Prolific), else empty"},
        },
    },
    "State": {
        "type": "object",
        "required": ["stage", "answered", "planned"],
        "properties": {
            "stage": {
                "type": "string",
                "enum": STAGES,
                "description": "consent -> practice -> trial -> questionnaire (if any) -> finish -> completed; "
                "declined, full and screened_out (every practice attempt failed) are final",
            },
            "answered": {"type": "integer", "minimum": 0},
            "planned": {"type": "integer", "minimum": 0},
            "completion": _ref("Completion"),
            "message": {"type": "string", "description": "screened_out only: the polite end with the platform's "
                        "instruction (MTurk: return the HIT; Prolific: return the study); there is no completion code"},
        },
    },
    "Question": {
        "type": "object",
        "required": ["name", "label", "type", "choices", "required"],
        "properties": {
            "name": STRING,
            "label": STRING,
            "type": {"type": "string", "enum": ["text", "choice", "number"]},
            "choices": {"type": "array", "items": STRING},
            "required": {"type": "boolean"},
        },
    },
    "Viewport": {
        "type": "object",
        "required": ["width", "height"],
        "properties": {
            "width": {"type": "integer", "minimum": 0, "description": "CSS pixels"},
            "height": {"type": "integer", "minimum": 0, "description": "CSS pixels"},
        },
    },
    "Study": {
        "type": "object",
        "description": "What the worker may see of the study: its public title, never its internal name.",
        "required": ["title", "description", "kind", "question", "hint", "consent_text", "consent_version",
                     "instructions", "practice_pass_fraction", "min_viewport", "questionnaire"],
        "properties": {
            "title": {"type": "string", "description": "the public title (page and tab title)"},
            "description": {"type": "string", "description": "the public description (may be empty)"},
            "kind": {"type": "string", "enum": ["<designs>"]},
            "question": STRING,
            "hint": STRING,
            "consent_text": STRING,
            "consent_version": STRING,
            "instructions": STRING,
            "practice_pass_fraction": {"type": "number", "minimum": 0, "maximum": 1},
            "min_viewport": {
                "allOf": [_ref("Viewport")],
                "description": "the smallest window the study accepts (0 = any); when either side is set, "
                "consent must carry the measured `viewport`",
            },
            "questionnaire": {"type": "array", "items": _ref("Question")},
        },
    },  # fmt: skip
    "TrialImage": {
        "type": "object",
        "required": ["side", "label", "url"],
        "properties": {
            "side": {"type": "string", "enum": list(get_args(Side)),
                     "description": "the image's place on the page: main (one picture), left/right (a pair), "
                                    "p1..p4 (panels, in page order); never which one is right"},
            "label": {"type": "string", "description": "the caption over the image: Robot A / Robot B (trust), the "
                                                       "class a panel explains (distinction), empty otherwise"},
            "url": {"type": "string", "description": "PNG; the URL itself authorizes (participant token)"},
        },
    },
    "Trial": {
        "type": "object",
        "description": "One trial (the answer fields each design fills are filled in by `schema()`).",
        "required": ["token", "kind", "question", "hint", "number", "total", "images", "options", "scale",
                     "predicted", "comment_prompt", "preload", "expires_at"],
        "properties": {
            "token": {"type": "string", "description": "the trial (assignment) token to send back"},
            "kind": {"type": "string", "enum": ["<designs>"]},
            "question": STRING,
            "hint": STRING,
            "number": {"type": "integer", "minimum": 1},
            "total": {"type": "integer", "minimum": 1},
            "images": {"type": "array", "items": _ref("TrialImage")},
            "options": {"type": "array", "items": STRING},
            "scale": {"type": "array", "items": STRING},
            "predicted": STRING,
            "comment_prompt": STRING,
            "preload": {"type": "array", "items": STRING, "description": "images of the next trial"},
            "expires_at": {"type": "string", "description": "ISO 8601 end of the lease (empty for practice)"},
            "key": {"type": "array", "items": _ref("ColourKeyRow"),
                    "description": "the study's colour key, the same on every trial (one row per rendering)"},
            "answer": {**STRING, "description": "worked example only: its answer"},
            "why": {**STRING, "description": "worked example only: why that is the answer"},
        },
    },  # fmt: skip
    "ColourKeyRow": {
        "type": "object",
        "required": ["kind", "image", "low", "high", "description"],
        "properties": {
            "kind": STRING,
            "image": {"type": "string", "description": "URL of the legend image drawn by the renderer"},
            "low": STRING,
            "high": STRING,
            "description": STRING,
        },
    },
    "FocusEvent": {
        "type": "object",
        "required": ["type", "t"],
        "properties": {
            "type": {"type": "string", "enum": ["focus", "blur", "visible", "hidden"]},
            "t": {"type": "integer", "minimum": 0, "maximum": 21600000, "description": "ms since the trial was shown"},
        },
    },
    "EntryRequest": {
        "type": "object",
        "description": "The platform's URL parameters, as received. None: a plain link (anonymous id). "
        "assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE: an MTurk preview (nothing stored). An entry resumes a "
        "participant only for the same assignmentId / SESSION_ID; inv is the signed invitation of a study "
        "that requires one.",
        "properties": {
            name: {"type": "string"}
            for name in ("assignmentId", "hitId", "workerId", "turkSubmitTo", "PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "inv")
        },
    },
    "EntryResponse": {
        "type": "object",
        "required": ["preview", "participant_token", "state", "study", "example"],
        "properties": {
            "preview": {"type": "boolean"},
            "participant_token": {**NULLABLE_STRING, "description": "send as X-Participant-Token from now on"},
            "state": {"allOf": [_ref("State")], "nullable": True},
            "study": _ref("Study"),
            "example": {"allOf": [_ref("Trial")], "nullable": True},
        },
    },
    "ParticipantResponse": {
        "type": "object",
        "required": ["state", "study"],
        "properties": {"state": _ref("State"), "study": _ref("Study")},
    },
    "StateResponse": {"type": "object", "required": ["state"], "properties": {"state": _ref("State")}},
    "ConsentRequest": {
        "type": "object",
        "required": ["agree", "consent_version"],
        "description": "Device gate: when the study sets `min_viewport` (either side > 0), agreeing must include "
        "`viewport`, the worker's window size as measured by the client (CSS pixels, e.g. `window.innerWidth` and "
        "`innerHeight`). Missing, or smaller than the minimum: 400 `viewport_too_small` and nothing is recorded "
        "(the worker may switch to a larger screen and consent in the same session). Declining needs no viewport.",
        "properties": {
            "agree": {"type": "boolean"},
            "consent_version": STRING,
            "viewport": {
                "type": "object",
                "required": ["width", "height"],
                "properties": {
                    "width": {"type": "integer", "minimum": 1, "maximum": 100000},
                    "height": {"type": "integer", "minimum": 1, "maximum": 100000},
                },
            },
        },
    },
    "PracticeResponse": {
        "type": "object",
        "description": "The current practice attempt: its own draw of practice items (another draw after a "
        "failed attempt).",
        "required": ["trials", "pass_fraction", "attempt", "attempts"],
        "properties": {
            "trials": {"type": "array", "items": _ref("Trial")},
            "pass_fraction": {"type": "number", "minimum": 0, "maximum": 1},
            "attempt": {"type": "integer", "minimum": 1, "description": "this attempt, 1-based"},
            "attempts": {"type": "integer", "minimum": 1, "description": "the attempts allowed (then screened out)"},
        },
    },
    "PracticeRequest": {
        "type": "object",
        "required": ["answers"],
        "properties": {
            "answers": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "practice trial token -> 0-based choice",
            },
            "attempt": {
                "type": "integer",
                "minimum": 1,
                "description": "the attempt answered (from GET practice); another than the current one is a 409 "
                "and grades nothing",
            },
        },
    },
    "PracticeResult": {
        "type": "object",
        "required": ["passed", "n_correct", "n_items", "required", "attempt", "attempts", "attempts_left",
                     "screened_out", "feedback", "state"],
        "properties": {
            "passed": {"type": "boolean"},
            "n_correct": {"type": "integer", "minimum": 0},
            "n_items": {"type": "integer", "minimum": 0},
            "required": {"type": "integer", "minimum": 0},
            "attempt": {"type": "integer", "minimum": 1, "description": "the attempt just graded"},
            "attempts": {"type": "integer", "minimum": 1},
            "attempts_left": {"type": "integer", "minimum": 0, "description": "GET practice for the next draw"},
            "screened_out": {"type": "boolean", "description": "the last attempt failed: the study ends here"},
            "feedback": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["token", "correct", "correct_choice", "correct_robot", "right_answer"],
                    "properties": {
                        "token": STRING,
                        "correct": {"type": "boolean", "nullable": True},
                        "correct_choice": {"type": "integer", "nullable": True,
                                           "description": "discrimination: the displayed index of the right option"},
                        "correct_robot": {"type": "string", "enum": ["A", "B", None], "nullable": True,
                                          "description": "trust: the robot as displayed (A left, B right) that was right"},
                        "right_answer": {"type": "string", "description": "the right answer in words (empty when none)"},
                    },
                },
            },
            "state": _ref("State"),
        },
    },
    "TrialResponse": {
        "type": "object",
        "required": ["trial", "state"],
        "properties": {"trial": {"allOf": [_ref("Trial")], "nullable": True}, "state": _ref("State")},
    },
    "AnswerRequest": {
        "type": "object",
        "required": ["assignment", "choice"],
        "properties": {
            "assignment": {
                "type": "string",
                "minLength": 1,
                "description": "the token of the trial shown by GET trial (a trial never shown, such as the "
                "preloaded next one, is refused: 400 naming `assignment`)",
            },
            "choice": {"type": "integer", "minimum": 0, "description": "filled in by `schema()`"},
            "client_response_ms": {"type": "integer", "minimum": 0, "maximum": 21600000},
            "focus_events": {"type": "array", "maxItems": 200, "items": _ref("FocusEvent")},
            "comment": {"type": "string", "maxLength": 2000},
        },
    },
    "AnswerResponse": {
        "type": "object",
        "required": ["outcome", "state"],
        "properties": {
            "outcome": {
                "type": "string",
                "enum": ["recorded", "duplicate", "expired"],
                "description": "duplicate: this trial was answered already (nothing changed); expired: the lease "
                "ran out and its slot went to someone else (nothing stored)",
            },
            "state": _ref("State"),
        },
    },
    "QuestionnaireRequest": {
        "type": "object",
        "required": ["answers"],
        "properties": {
            "answers": {
                "type": "object",
                "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}]},
            }
        },
    },
    "CompleteResponse": {
        "type": "object",
        "required": ["completion", "state"],
        "properties": {"completion": _ref("Completion"), "state": _ref("State")},
    },
}

TOO_MANY = {"429": _json(_ref("Error"), "rate limited (see Retry-After)")}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "xaistudy worker API",
        "version": "1.0.0",
        "description": "The crowd worker's study flow (the same services as the HTML pages). Enter with the "
        "platform's parameters, then send the returned participant token in the X-Participant-Token header. "
        "No cookies are used, so there is no CSRF token. Stages: consent -> practice -> trial (repeat GET/POST) "
        "-> questionnaire (if the study has one) -> finish -> completed (POST complete returns the code).",
    },
    "servers": [{"url": "/"}],
    "components": {
        "securitySchemes": {"participantToken": {"type": "apiKey", "in": "header", "name": "X-Participant-Token"}},
        "schemas": SCHEMAS,
    },
    "security": [{"participantToken": []}],
    "paths": {
        "/api/v1/openapi.json": {
            "get": _op("This schema", {"200": _json({"type": "object"}, "OpenAPI document")}, auth=False,
                       op_id="openapi"),
        },
        "/api/v1/studies/{slug}/enter": {
            "parameters": [{"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}],
            "post": _op(
                "Enter a study from MTurk, Prolific or a plain link",
                {"200": _json(_ref("EntryResponse"), "returning participant (or MTurk preview)"),
                 "201": _json(_ref("EntryResponse"), "new participant"),
                 "404": _json(_ref("Error"), "unknown study")},
                body=_ref("EntryRequest"), auth=False, extra=TOO_MANY, op_id="enter",
            ),
        },
        "/api/v1/participant": {
            "get": _op("Current stage and the study's wording", {"200": _json(_ref("ParticipantResponse"), "state")},
                       op_id="participant"),
        },
        "/api/v1/participant/consent": {
            "post": _op("Agree or decline (declining ends the study); agreeing to a study with a minimum viewport "
                        "needs the measured `viewport` (400 `viewport_too_small` otherwise, nothing recorded)",
                        {"200": _json(_ref("StateResponse"), "state")},
                        body=_ref("ConsentRequest"), op_id="consent"),
        },
        "/api/v1/participant/practice": {
            "get": _op("The current practice attempt (409 screened_out when none is left)",
                       {"200": _json(_ref("PracticeResponse"), "practice")}, op_id="practice_get"),
            "post": _op("Grade the current practice attempt; after a failed one GET practice for a new draw, "
                        "after the last failed one the participant is screened out",
                        {"200": _json(_ref("PracticeResult"), "result")}, body=_ref("PracticeRequest"),
                        op_id="practice_post"),
        },
        "/api/v1/participant/trial": {
            "get": _op("The current trial (leased to this participant); null when none is left",
                       {"200": _json(_ref("TrialResponse"), "trial")}, op_id="trial_get"),
            "post": _op("Answer a trial (a repeated answer is a no-op reported as duplicate)",
                        {"200": _json(_ref("AnswerResponse"), "outcome"),
                         "404": _json(_ref("Error"), "unknown trial")},
                        body=_ref("AnswerRequest"), extra=TOO_MANY, op_id="trial_post"),
        },
        "/api/v1/participant/questionnaire": {
            "post": _op("Submit the closing questionnaire", {"200": _json(_ref("StateResponse"), "state")},
                        body=_ref("QuestionnaireRequest"), op_id="questionnaire"),
        },
        "/api/v1/participant/complete": {
            "post": _op("Complete the study once every answer is stored; returns the completion code",
                        {"200": _json(_ref("CompleteResponse"), "completed")}, op_id="complete"),
        },
    },  # fmt: skip
}


#: The trial payload's answer fields, always present (empty where a design does not use them).
ANSWER_FIELDS = ("options", "scale", "predicted", "comment_prompt")


def _merged_choice(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    """The designs' ``choice`` schemas as one: an integer from the smallest minimum to the largest
    maximum (no maximum when some design sets none)."""
    choice: dict[str, Any] = {"type": "integer", "minimum": min((s.get("minimum", 0) for s in schemas), default=0)}
    maxima = [s.get("maximum") for s in schemas]
    if maxima and None not in maxima:
        choice["maximum"] = max(maxima)  # type: ignore[type-var]
    choice["description"] = "the answer's index; per study design: " + "; ".join(
        f"{name} {_range_text(s)}" for name, s in zip((d.name for d in designs()), schemas, strict=True)
    )
    return choice


def _range_text(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum", 0), schema.get("maximum")
    return f"{low}..{high}" if high is not None else f">= {low}"


def schema() -> dict[str, Any]:
    """The OpenAPI document for the designs registered now.

    ``Study.kind`` and ``Trial.kind``: an enum of the designs' names. ``Trial``: the common fields,
    plus the union of the designs' ``trial_schema()["properties"]`` (a field two designs fill keeps
    the first's schema, with both descriptions); its description lists each design's way to answer.
    ``AnswerRequest.choice``: the designs' ``answer_schema()`` merged (:func:`_merged_choice`).
    """
    document = copy.deepcopy(_DOCUMENT)
    parts = document["components"]["schemas"]
    registered = designs()
    names = [design.name for design in registered]
    parts["Study"]["properties"]["kind"]["enum"] = list(names)
    trial = parts["Trial"]
    trial["properties"]["kind"]["enum"] = list(names)
    answers, filled = [], set()
    for design in registered:
        part = design.trial_schema()
        answers.append(part["answer"])
        for field, field_schema in part.get("properties", {}).items():
            known = trial["properties"].get(field)
            if field not in filled and (known is None or field in ANSWER_FIELDS):
                trial["properties"][field] = copy.deepcopy(field_schema)
                filled.add(field)
            elif field in filled and field_schema.get("description"):
                description = known.get("description", "")
                if field_schema["description"] not in description:
                    known["description"] = f"{description}; {field_schema['description']}" if description else field_schema["description"]
    trial["description"] = "One trial. Answer with " + "; ".join(answers) + "."
    parts["AnswerRequest"]["properties"]["choice"] = _merged_choice([design.answer_schema() for design in registered])
    return document


SCHEMA: dict[str, Any] = schema()

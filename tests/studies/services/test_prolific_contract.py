"""Contract tests of ``studies.services.prolific`` against Prolific's *documented* API, not Prolific.

No machine here reaches Prolific. A local HTTP server (127.0.0.1, port 0) serves the endpoints the
client uses and checks every request body against the fields Prolific documents (required keys,
types, enumerations), written here from the documentation pages:

- https://docs.prolific.com/api-reference/studies (create a draft study, retrieve, transition PUBLISH;
  ``completion_codes`` with ``code``, ``code_type``, ``actions``; ``prolific_id_option``, ``reward``,
  ``total_available_places``, ``estimated_completion_time``, ``device_compatibility``, ``filters``);
- https://docs.prolific.com/api-reference/submissions (list, retrieve, transition APPROVE / REJECT with
  ``message`` and ``rejection_category``);
- https://docs.prolific.com/api-reference/bonuses/create-bonus-payments (``study_id``, ``csv_bonuses``:
  ``<participant_id>,<amount>`` lines) and .../pay-bonus-payments (**not idempotent**);
- https://docs.prolific.com/api-reference/participant-groups (add participants: ``participant_ids``).

Authentication: every request must carry ``Authorization: Token <token>``.
Faults: a timeout after Prolific accepted a bulk bonus, a partial bulk bonus (the retry pays only
the missing bonuses: the choice made in the client), a 5xx on approve.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from studies.fixtures.builders import make_worker_study
from studies.models import Participant, PlatformAction, Study
from studies.services import prolific

pytestmark = pytest.mark.django_db

TOKEN = "test-token"
STR, INT, LIST, DICT = str, int, list, dict

# field -> (type, required, allowed values or None), from the documentation pages above
STUDY_CREATE = {
    "name": (STR, True, None),
    "internal_name": (STR, False, None),
    "description": (STR, True, None),
    "external_study_url": (STR, True, None),
    "prolific_id_option": (STR, True, {"question", "url_parameters", "not_required"}),
    "completion_codes": (LIST, True, None),
    "total_available_places": (INT, True, None),
    "estimated_completion_time": (INT, True, None),
    "reward": (INT, True, None),
    "device_compatibility": (LIST, False, None),
    "filters": (LIST, False, None),
}
COMPLETION_CODE = {
    "code": (STR, True, None),
    "code_type": (
        STR,
        True,
        {
            "COMPLETED",
            "FAILED_ATTENTION_CHECK",
            "FOLLOW_UP_STUDY",
            "GIVE_BONUS",
            "INCOMPATIBLE_DEVICE",
            "NO_CONSENT",
            "OTHER",
        },
    ),
    "actions": (LIST, True, None),
}
CODE_ACTIONS = {
    "AUTOMATICALLY_APPROVE",
    "MANUALLY_REVIEW",
    "ADD_TO_PARTICIPANT_GROUP",
    "REMOVE_FROM_PARTICIPANT_GROUP",
    "REQUEST_RETURN",
    "DYNAMIC_PAYMENT",
    "FIXED_SCREEN_OUT_PAYMENT",
}
DEVICES = {"desktop", "tablet", "mobile"}
STUDY_TRANSITION = {"action": (STR, True, {"PUBLISH", "PAUSE", "START", "STOP"})}
SUBMISSION_TRANSITION = {
    "action": (STR, True, {"APPROVE", "REJECT", "START", "COMPLETE", "UNCLAIM"}),
    "message": (STR, False, None),
    "rejection_category": (STR, False, prolific.REJECTION_CATEGORIES),
}
BONUS_SETUP = {"study_id": (STR, True, None), "csv_bonuses": (STR, True, None)}
GROUP_ADD = {"participant_ids": (LIST, True, None)}
CSV_LINE = re.compile(r"^[0-9a-zA-Z]+,\d+(\.\d{1,2})?$")


def check(body: Any, schema: dict) -> None:
    """The body is an object with the documented required keys, types and values, nothing else."""
    assert isinstance(body, dict), body
    unknown = set(body) - set(schema)
    assert not unknown, f"undocumented fields {unknown}"
    for field, (kind, required, allowed) in schema.items():
        if field not in body:
            assert not required, f"missing required field {field}"
            continue
        value = body[field]
        assert isinstance(value, kind), f"{field}: {value!r} is not {kind.__name__}"
        assert not isinstance(value, bool), f"{field}: a boolean"
        if allowed is not None:
            assert value in allowed, f"{field}: {value!r} not in {sorted(allowed)}"


class FakeProlific:
    """The documented endpoints over in-memory state; ``faults`` switches on the fault modes."""

    def __init__(self) -> None:
        self.studies: dict[str, dict] = {}
        self.submissions: dict[str, dict] = {}
        self.bulks: dict[str, dict] = {}
        self.groups: dict[str, set] = {"grp1": set()}
        self.requests: list[tuple[str, str, Any]] = []
        self.pays: list[str] = []
        self.faults: dict[str, Any] = {}
        self.lock = threading.Lock()

    def add_submission(self, study_id: str, participant_id: str) -> str:
        sid = f"sub{len(self.submissions) + 1}"
        self.submissions[sid] = {
            "id": sid,
            "participant_id": participant_id,
            "study_id": study_id,
            "status": "AWAITING REVIEW",
            "bonus_payments": [],
        }
        return sid

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any, float]:
        """(status, json answer, seconds to sleep *after* applying the change, before answering)."""
        with self.lock:
            self.requests.append((method, path, body))
            parts = [p for p in path.split("?")[0].split("/") if p][2:]  # drop api/v1
            match method, parts:
                case "GET", ["studies"]:
                    return 200, {"results": list(self.studies.values())}, 0
                case "POST", ["studies"]:
                    check(body, STUDY_CREATE)
                    assert body["completion_codes"], "at least one completion code"
                    for code in body["completion_codes"]:
                        check(code, COMPLETION_CODE)
                        for act in code["actions"]:
                            assert act["action"] in CODE_ACTIONS
                    assert set(body["device_compatibility"]) <= DEVICES
                    for f in body["filters"]:
                        assert isinstance(f.get("filter_id"), str)
                        assert ("selected_values" in f) != ("selected_range" in f)
                    assert body["estimated_completion_time"] >= 1
                    assert body["total_available_places"] >= 1
                    sid = f"study{len(self.studies) + 1}"
                    self.studies[sid] = {"id": sid, "status": "UNPUBLISHED", **body}
                    return 201, self.studies[sid], 0
                case "GET", ["studies", sid]:
                    return (200, self.studies[sid], 0) if sid in self.studies else (404, {"error": "no"}, 0)
                case "POST", ["studies", sid, "transition"]:
                    check(body, STUDY_TRANSITION)
                    self.studies[sid]["status"] = "ACTIVE"
                    return 200, self.studies[sid], 0
                case "GET", ["studies", sid, "submissions"]:
                    rows = [
                        {k: v for k, v in s.items() if k != "bonus_payments"}
                        for s in self.submissions.values()
                        if s["study_id"] == sid
                    ]
                    return 200, {"results": rows, "_links": {"next": {"href": None}}}, 0
                case "GET", ["submissions", sid]:
                    return 200, self.submissions[sid], 0
                case "POST", ["submissions", "bonus-payments"]:
                    check(body, BONUS_SETUP)
                    assert body["study_id"] in self.studies
                    lines = body["csv_bonuses"].strip().split("\n")
                    rows = []
                    for line in lines:
                        assert CSV_LINE.match(line), line
                        pid, amount = line.split(",")
                        if not any(
                            s["participant_id"] == pid and s["study_id"] == body["study_id"]
                            for s in self.submissions.values()
                        ):
                            return 400, {"error": f"{pid} did not take part"}, 0
                        rows.append((pid, round(float(amount) * 100)))
                    bid = f"bulk{len(self.bulks) + 1}"
                    self.bulks[bid] = {"id": bid, "study": body["study_id"], "rows": rows}
                    total = sum(c for _, c in rows)
                    return (
                        201,
                        {
                            "id": bid,
                            "study": body["study_id"],
                            "amount": total,
                            "fees": 0,
                            "total_amount": total,
                        },
                        0,
                    )
                case "POST", ["bulk-bonus-payments", bid, "pay"]:
                    assert body is None, "the pay endpoint takes no body"
                    self.pays.append(bid)
                    rows = self.bulks[bid]["rows"]
                    partial = self.faults.pop("partial", None)
                    for pid, cents in rows[:partial] if partial is not None else rows:
                        sub = next(
                            s
                            for s in self.submissions.values()
                            if s["participant_id"] == pid and s["study_id"] == self.bulks[bid]["study"]
                        )
                        sub["bonus_payments"].append(cents)
                    if partial is not None:
                        return 500, {"error": "internal"}, 0
                    return 202, {}, self.faults.pop("pay_sleep", 0)
                case "POST", ["submissions", sid, "transition"]:
                    check(body, SUBMISSION_TRANSITION)
                    if body["action"] == "REJECT":
                        assert "rejection_category" in body
                        assert len(body.get("message", "")) >= 100
                    self.submissions[sid]["status"] = (
                        "APPROVED" if body["action"] == "APPROVE" else "REJECTED"
                    )
                    if self.faults.pop("approve_500", False):
                        return 502, {"error": "bad gateway"}, 0
                    return 200, self.submissions[sid], 0
                case "GET", ["participant-groups", gid, "participants"]:
                    return 200, {"results": [{"participant_id": p} for p in sorted(self.groups[gid])]}, 0
                case "POST", ["participant-groups", gid, "participants"]:
                    check(body, GROUP_ADD)
                    assert all(isinstance(p, str) for p in body["participant_ids"])
                    self.groups[gid] |= set(body["participant_ids"])
                    return 200, {"results": [{"participant_id": p} for p in sorted(self.groups[gid])]}, 0
            return 404, {"error": f"no route {method} {path}"}, 0


@pytest.fixture
def fake(settings, monkeypatch):
    state = FakeProlific()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                self._answer(401, {"error": "token"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            try:
                code, answer, sleep = state.handle(self.command, self.path, body)
            except AssertionError as broken:  # a contract violation: a 400, and recorded for the test
                state.requests.append(("VIOLATION", self.path, str(broken)))
                code, answer, sleep = 400, {"error": str(broken)}, 0
            time.sleep(sleep)
            self._answer(code, answer)

        def _answer(self, code: int, answer: Any) -> None:
            raw = json.dumps(answer).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.XAISTUDY_PROLIFIC_API = f"http://127.0.0.1:{server.server_port}/api/v1/"
    settings.XAISTUDY_PUBLIC_URL = "https://xai.example.org"
    monkeypatch.setenv("PROLIFIC_TOKEN", TOKEN)
    monkeypatch.setattr(prolific, "TIMEOUT_S", 0.5)
    yield state
    server.shutdown()
    server.server_close()
    assert not [r for r in state.requests if r[0] == "VIOLATION"], "requests broke the documented contract"


def _participant(study: Study, pid: str) -> Participant:
    return Participant.objects.create(
        study=study, platform=Study.Platform.PROLIFIC, platform_worker_id=pid, worker_hash=pid
    )


@pytest.fixture
def drafted(fake):
    study = make_worker_study(platform=Study.Platform.PROLIFIC, with_files=False)
    row = prolific.study_draft_create(
        study=study, reward_cents=150, places=3, estimated_minutes=10,
        filters=[{"filter_id": "approval_rate", "selected_range": {"lower": 95}}],
    )  # fmt: skip
    assert row.status == PlatformAction.Status.CONFIRMED
    pid = row.response["id"]
    people = {p: _participant(study, p) for p in ("aaa1", "bbb2", "ccc3")}
    subs = {p: fake.add_submission(pid, p) for p in people}
    return study, pid, people, subs


def test_full_life_cycle(fake, drafted) -> None:
    study, pid, people, subs = drafted
    created = fake.studies[pid]
    assert created["name"] == study.public_title
    assert created["internal_name"] == f"xaistudy:{study.slug}"
    assert "PROLIFIC_PID={{%PROLIFIC_PID%}}" in created["external_study_url"]
    assert created["completion_codes"][0]["code"] == study.completion_code
    assert created["completion_codes"][0]["actions"] == [{"action": "MANUALLY_REVIEW"}]
    assert prolific.study_publish(study=study).status == PlatformAction.Status.CONFIRMED
    assert fake.studies[pid]["status"] == "ACTIVE"
    assert {s["participant_id"] for s in prolific.submissions_list(study=study)} == set(people)
    assert prolific.submission_approve(study=study, participant=people["aaa1"]).status == "confirmed"
    reject = prolific.submission_reject(
        study=study,
        participant=people["bbb2"],
        category="FAILED_CHECK",
        message="You failed two of the attention checks. " * 4,
    )
    assert reject.status == "confirmed"
    assert fake.submissions[subs["aaa1"]]["status"] == "APPROVED"
    assert fake.submissions[subs["bbb2"]]["status"] == "REJECTED"
    bonus = prolific.bonuses_send(study=study, payments={"aaa1": 125, "ccc3": 50})
    assert bonus.status == "confirmed"
    assert bonus.amount_cents == 175
    setup = next(b for m, p, b in fake.requests if p.endswith("submissions/bonus-payments/"))
    assert setup["csv_bonuses"] == "aaa1,1.25\nccc3,0.50\n"
    assert fake.submissions[subs["aaa1"]]["bonus_payments"] == [125]
    # the same bulk again: the ledger row answers, nothing is paid
    assert prolific.bonuses_send(study=study, payments={"ccc3": 50, "aaa1": 125}).pk == bonus.pk
    assert len(fake.pays) == 1
    group = prolific.participant_group_add(study=study, group_id="grp1", participant_ids=["aaa1", "bbb2"])
    assert group.status == "confirmed"
    assert fake.groups["grp1"] == {"aaa1", "bbb2"}
    assert set(PlatformAction.objects.filter(study=study).values_list("action", flat=True)) == {
        "create",
        "publish",
        "approve",
        "reject",
        "bonus",
        "qualify",
    }
    # a second create of the same study is answered by the ledger, no second draft
    prolific.study_draft_create(study=study, reward_cents=150, places=3, estimated_minutes=10)
    assert len(fake.studies) == 1


def test_timeout_after_bulk_bonus_was_accepted_is_not_paid_again(fake, drafted) -> None:
    study, _pid, _people, subs = drafted
    fake.faults["pay_sleep"] = 1.5  # Prolific pays, then the answer comes after our timeout
    with pytest.raises(prolific.ProlificError):
        prolific.bonuses_send(study=study, payments={"aaa1": 200})
    row = PlatformAction.objects.get(study=study, action="bonus")
    assert row.status == PlatformAction.Status.SENT
    retried = prolific.bonuses_send(study=study, payments={"aaa1": 200})
    assert retried.pk == row.pk
    assert retried.status == PlatformAction.Status.CONFIRMED
    assert len(fake.pays) == 1, "the retry found the payment by listing and did not pay again"
    assert fake.submissions[subs["aaa1"]]["bonus_payments"] == [200]


def test_earlier_bonus_of_the_same_amount_is_not_taken_for_this_one(fake, drafted) -> None:
    study, _pid, _people, subs = drafted
    fake.submissions[subs["aaa1"]]["bonus_payments"].append(200)  # paid by hand before
    fake.faults["pay_sleep"] = 1.5
    with pytest.raises(prolific.ProlificError):
        prolific.bonuses_send(study=study, payments={"aaa1": 200})
    prolific.bonuses_send(study=study, payments={"aaa1": 200})
    assert len(fake.pays) == 1
    assert fake.submissions[subs["aaa1"]]["bonus_payments"] == [200, 200]


def test_partial_bulk_bonus_retry_pays_only_the_missing(fake, drafted) -> None:
    """Choice: the retry completes a partial bulk bonus with a new bulk of only the missing bonuses."""
    study, _pid, _people, subs = drafted
    fake.faults["partial"] = 1  # the first of the two is paid, then a 500
    payments = {"aaa1": 100, "ccc3": 300}
    with pytest.raises(prolific.ProlificError):
        prolific.bonuses_send(study=study, payments=payments)
    assert PlatformAction.objects.get(study=study, action="bonus").status == PlatformAction.Status.SENT
    row = prolific.bonuses_send(study=study, payments=payments)
    assert row.status == PlatformAction.Status.CONFIRMED
    assert row.response["paid"] == [["ccc3", 300]]
    setups = [b["csv_bonuses"] for m, p, b in fake.requests if p.endswith("submissions/bonus-payments/")]
    assert setups == ["aaa1,1.00\nccc3,3.00\n", "ccc3,3.00\n"]
    assert fake.submissions[subs["aaa1"]]["bonus_payments"] == [100]
    assert fake.submissions[subs["ccc3"]]["bonus_payments"] == [300]


def test_5xx_on_approve_reconciles_with_the_submission_status(fake, drafted) -> None:
    study, _pid, people, subs = drafted
    fake.faults["approve_500"] = True  # Prolific approved it, the gateway answered 502
    with pytest.raises(prolific.ProlificError):
        prolific.submission_approve(study=study, participant=people["ccc3"])
    assert PlatformAction.objects.get(study=study, action="approve").status == PlatformAction.Status.SENT
    row = prolific.submission_approve(study=study, participant=people["ccc3"])
    assert row.status == PlatformAction.Status.CONFIRMED
    assert row.attempts == 2
    transitions = [
        p for m, p, b in fake.requests if m == "POST" and p.endswith(f"{subs['ccc3']}/transition/")
    ]
    assert len(transitions) == 1, "the retry read the submission's status and did not send again"


def test_refusals_and_missing_token(fake, drafted, monkeypatch) -> None:
    study, _pid, people, _subs = drafted
    row = prolific.bonuses_send(study=study, payments={"zzz9": 100})  # not in the study: a 400
    assert row.status == PlatformAction.Status.FAILED
    assert "did not take part" in row.error
    assert fake.pays == []
    with pytest.raises(ValueError):
        prolific.submission_reject(
            study=study, participant=people["aaa1"], category="LOW_EFFORT", message="short"
        )
    monkeypatch.delenv("PROLIFIC_TOKEN")
    with pytest.raises(Exception, match="PROLIFIC_TOKEN"):
        prolific.submissions_list(study=study)

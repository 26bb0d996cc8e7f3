"""The OpenAPI document takes what differs between study designs from the design registry (issue #15)."""

from __future__ import annotations

from typing import Any

import pytest

from studies.designs import designs, register, unregister
from studies.designs.base import Design
from studies.web.openapi import SCHEMA, schema


def _names() -> list[str]:
    return [design.name for design in designs()]


def test_the_kind_enum_is_the_registered_designs():
    for document in (SCHEMA, schema()):
        parts = document["components"]["schemas"]
        assert parts["Study"]["properties"]["kind"]["enum"] == _names()
        assert parts["Trial"]["properties"]["kind"]["enum"] == _names()


def test_the_served_document_is_the_schema(client):
    served = client.get("/api/v1/openapi.json").json()
    assert served["components"]["schemas"]["Study"]["properties"]["kind"]["enum"] == _names()
    assert served == schema()


def test_the_answer_choice_merges_the_designs_answer_schemas():
    choice = SCHEMA["components"]["schemas"]["AnswerRequest"]["properties"]["choice"]
    assert choice["type"] == "integer"
    assert choice["minimum"] == min(d.answer_schema().get("minimum", 0) for d in designs())
    assert choice["maximum"] == max(d.answer_schema()["maximum"] for d in designs())


class _Statement(Design):
    """A test-only design: one picture, the worker rates a statement on its own field."""

    name = "openapi_statement_test"
    label = "A statement (test only)"

    def answer_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 0, "maximum": 9}

    def trial_schema(self) -> dict[str, Any]:
        return {"answer": "`openapi_statement_test`: `choice` = a rating 0..9",
                "properties": {"statement": {"type": "string", "description": "the statement to rate"}}}


@pytest.fixture
def statement_design():
    design = register(_Statement())
    yield design
    unregister(design.name)


def test_a_design_registered_later_is_in_the_served_schema(statement_design):
    parts = schema()["components"]["schemas"]
    assert "openapi_statement_test" in parts["Study"]["properties"]["kind"]["enum"]
    assert parts["Trial"]["properties"]["statement"]["description"] == "the statement to rate"
    assert "`openapi_statement_test`: `choice` = a rating 0..9" in parts["Trial"]["description"]
    assert parts["AnswerRequest"]["properties"]["choice"]["maximum"] == 9
    # the common fields stay as they are
    assert parts["Trial"]["properties"]["token"] == SCHEMA["components"]["schemas"]["Trial"]["properties"]["token"]

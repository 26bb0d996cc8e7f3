"""``Study.explainer_options`` read as :class:`studies.designs.options.StudyOptions`.

Parsing fills the defaults, keeps each method's options, and names the key of a bad value; a
study whose options are bad is refused by ``full_clean`` (the admin form) on that field; a design
reads its own options class (``Design.options_class``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
from django.core.exceptions import ValidationError

from studies.designs import design_for
from studies.designs.base import Design
from studies.designs.options import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_OVERLAY_BASE,
    DEFAULT_TOP_K,
    EVALUATION_KEYS,
    OptionsError,
    StudyOptions,
)
from studies.fixtures.builders import make_worker_study
from studies.models import Study


@pytest.mark.parametrize("raw", [None, {}])
def test_empty_options_are_the_defaults(raw):
    options = StudyOptions.parse(raw)
    assert options == StudyOptions()
    assert (options.display_size, options.chunk_size, options.top_k) == (None, DEFAULT_CHUNK_SIZE, DEFAULT_TOP_K)
    assert (options.exact, options.overlay_base) == (False, DEFAULT_OVERLAY_BASE)
    assert (dict(options.class_map), dict(options.evaluation), dict(options.methods)) == ({}, {}, {})
    assert options.method_options("gradcam") == {}


def test_every_key_is_read():
    options = StudyOptions.parse({
        "display_size": 96, "chunk_size": 2, "top_k": 3, "exact": True, "overlay_base": "color",
        "class_map": {"cat": 0, "dog": 7}, "evaluation": {"steps": 8, "baseline": "zero", "max_images": 2},
        "rise": {"masks": 200}, "occlusion": {"window": 16, "stride": 8}, "smoothgrad": None,
    })  # fmt: skip
    assert (options.display_size, options.chunk_size, options.top_k, options.exact) == (96, 2, 3, True)
    assert options.overlay_base == "color"
    assert dict(options.class_map) == {"cat": 0, "dog": 7}
    assert dict(options.evaluation) == {"steps": 8, "baseline": "zero", "max_images": 2}
    assert options.method_options("rise") == {"masks": 200}
    assert options.method_options("occlusion") == {"window": 16, "stride": 8}
    assert "smoothgrad" not in options.methods  # null: no options
    copy = options.method_options("rise")
    copy["masks"] = 1
    assert options.method_options("rise") == {"masks": 200}  # a copy each time


def test_null_takes_the_default():
    options = StudyOptions.parse({"display_size": None, "chunk_size": None, "exact": None, "overlay_base": None})
    assert options == StudyOptions()


@pytest.mark.parametrize(("raw", "key", "message"), [
    ({"display_size": 0}, "display_size", "explainer_options['display_size'] must be a whole number >= 1, got 0"),
    ({"display_size": "64"}, "display_size", "explainer_options['display_size'] must be a whole number >= 1"),
    ({"chunk_size": -1}, "chunk_size", "explainer_options['chunk_size'] must be a whole number >= 1, got -1"),
    ({"top_k": True}, "top_k", "explainer_options['top_k'] must be a whole number >= 1, got True"),
    ({"exact": "yes"}, "exact", "explainer_options['exact'] must be true or false, got 'yes'"),
    ({"overlay_base": "sepia"}, "overlay_base",
     "explainer_options['overlay_base'] must be one of ('gray', 'color'), got 'sepia'"),
    ({"class_map": {"cat": "0"}}, "class_map", "explainer_options['class_map'] must map category names to class ids"),
    ({"class_map": ["cat"]}, "class_map", "explainer_options['class_map'] must map category names to class ids"),
    ({"evaluation": {"stepz": 8}}, "evaluation",
     f"explainer_options['evaluation'] has unknown keys ['stepz']; known: {sorted(EVALUATION_KEYS)}"),
    ({"evaluation": {"steps": 0}}, "steps", "explainer_options['evaluation']['steps'] must be a whole number >= 1"),
    ({"evaluation": 3}, "evaluation", "explainer_options['evaluation'] must be an object, got 3"),
    ({"gradcam": 3}, "gradcam", "explainer_options['gradcam'] must be an object of the method's options, got 3"),
    ({"dispaly_size": 64}, "dispaly_size", "explainer_options has an unknown key 'dispaly_size': neither an option"),
    ([1, 2], "", "explainer_options must be an object (a JSON dict), got list"),
])  # fmt: skip
def test_a_bad_value_is_refused_naming_its_key(raw, key, message):
    with pytest.raises(OptionsError) as refused:
        StudyOptions.parse(raw)
    assert str(refused.value).startswith(message)
    assert refused.value.key == key
    assert isinstance(refused.value, ValueError)


@pytest.mark.django_db
def test_a_study_with_bad_options_is_refused_by_full_clean():
    study = make_worker_study(status=Study.Status.DRAFT, with_files=False)
    study.full_clean()  # the builder's study is valid
    study.explainer_options = {"display_size": 64, "overlay_base": "sepia"}
    with pytest.raises(ValidationError) as refused:
        study.full_clean()
    assert refused.value.message_dict == {
        "explainer_options": ["explainer_options['overlay_base'] must be one of ('gray', 'color'), got 'sepia'"]}
    study.explainer_options = {"display_size": 64, "overlay_base": "color", "rise": {"masks": 10}}
    study.full_clean()


@pytest.mark.django_db
def test_design_options_read_the_study_through_the_designs_options_class():
    @dataclass(frozen=True)
    class WithRounds(StudyOptions):
        KEYS: ClassVar[frozenset[str]] = StudyOptions.KEYS | {"rounds"}
        rounds: int = 1

        @classmethod
        def fields_of(cls, raw):  # type: ignore[no-untyped-def]
            fields = super().fields_of(raw)
            if (value := (raw or {}).get("rounds")) is not None:
                if not isinstance(value, int) or value < 1:
                    raise OptionsError("rounds", f"explainer_options['rounds'] must be >= 1, got {value!r}")
                fields["rounds"] = value
            return fields

    class Rounds(Design):
        name = "rounds"
        options_class = WithRounds

    study = make_worker_study(status=Study.Status.DRAFT, with_files=False)
    study.explainer_options = {"rounds": 3, "chunk_size": 4}
    with pytest.raises(OptionsError, match="unknown key 'rounds'"):
        design_for(study).options(study)  # the built-in design does not know the key
    options = Rounds().options(study)
    assert isinstance(options, WithRounds)
    assert (options.rounds, options.chunk_size) == (3, 4)
    study.explainer_options = {"rounds": 0}
    with pytest.raises(OptionsError, match=r"explainer_options\['rounds'\] must be >= 1, got 0"):
        Rounds().options(study)

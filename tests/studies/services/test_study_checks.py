"""Study configuration checks shared by the admin, commands and publish (issue #13)."""

from __future__ import annotations

import pytest

from studies.fixtures.builders import make_worker_study
from studies.models import Study
from studies.services.study_checks import method_choices, study_config_errors

pytestmark = pytest.mark.django_db


def test_a_prepared_study_from_the_fixtures_is_clean():
    study = make_worker_study(n_main=6, trials_per_participant=3)
    assert study_config_errors(study=study) == {}


@pytest.mark.parametrize(
    ("change", "field", "phrase"),
    [
        ({"methods": ["gradcam", "no_such_method"]}, "methods", "unknown method 'no_such_method'"),
        ({"methods": []}, "methods", "at least one"),
        ({"methods": "gradcam"}, "methods", "at least one"),
        ({"methods": ["gradcam", "gradcam"]}, "methods", "twice"),
        ({"wording": {"predicted": "Robot thinks {x}"}}, "wording", "predicted"),
        ({"trials_per_participant": 20}, "trials_per_participant", "6 main items"),
        ({"catch_trials": 3, "trials_per_participant": 3}, "catch_trials", "fewer"),
        ({"practice_trials": 0, "practice_pass_fraction": 1.0}, "practice_trials", "at least one"),
    ],
)
def test_each_rule_names_its_field(change, field, phrase):
    study = make_worker_study(n_main=6, trials_per_participant=3)
    for name, value in change.items():
        setattr(study, name, value)
    errors = study_config_errors(study=study)
    assert list(errors) == [field]
    assert phrase in errors[field][0]


def test_model_or_pair_by_kind_without_saving():
    study = make_worker_study(n_main=6)
    unsaved = Study(name="x", kind=Study.Kind.TRUST, methods=["gradcam"], image_set=study.image_set)
    assert "model_pair" in study_config_errors(study=unsaved)
    unsaved.kind = Study.Kind.CLASS_DISCRIMINATION
    assert "model" in study_config_errors(study=unsaved)


def test_trial_count_is_skipped_before_preparation_and_checked_with_a_known_count():
    study = make_worker_study(n_main=6, trials_per_participant=3)
    study.items.all().delete()
    study.trials_per_participant = 20
    assert "trials_per_participant" not in study_config_errors(study=study)
    assert "trials_per_participant" in study_config_errors(study=study, n_main_items=16)


def test_method_choices_carry_the_registry_descriptions():
    choices = dict(method_choices())
    assert "gradcam" in choices
    assert "Selvaraju" in choices["gradcam"]


def test_tokens_never_start_with_a_dash(monkeypatch):
    """A slug starting with '-' was read as an option by every study command (1 slug in 64)."""
    import studies.models as models

    monkeypatch.setattr(models.secrets, "token_urlsafe", lambda n: "-" + "A" * 31)
    assert models.new_token() == "x" + "A" * 31
    monkeypatch.undo()
    assert not any(models.new_token().startswith("-") for _ in range(2000))

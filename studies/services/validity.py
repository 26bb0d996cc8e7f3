"""The pre-launch validity audit: can a worker answer from anything but the explanation?

:func:`study_validity_audit` measures a prepared study's stimuli, layout and randomization and
stores the report (with its time and a fingerprint of what it measured) in
``Study.validity_report``; ``manage.py audit_stimuli``, the admin's "Run the validity audit"
action and the study's admin page (a read-only panel) show it. Publishing needs it:
:func:`validity_publish_refusal` (called by ``services.lifecycle.study_publish`` and by the admin
when the status is set to live) reruns the audit when the stored report is missing or stale and
refuses unless it passed, or the researcher acknowledged its failures
(``Study.validity_acknowledged``) after seeing them. A report measured on other items or stimuli
(a new fingerprint) clears the acknowledgement: it was given for other figures.

A check the study's design declares not applicable (``Design.validity_not_applicable``: trust has
no ``blind_observer``, discrimination no ``robot_a_side``) reports ``n/a`` with the design's reason.
Each check has what was measured, the figure, the threshold and ``pass`` / ``fail`` / ``n/a``
(thresholds are the constants below; the statistics are in
:mod:`studies.analysis.validity_stats`):

1. ``stimulus_format``: every stimulus the study shows (main, catch and practice, every method
   and model) has the same width, height, mode, bit depth and PNG metadata chunks.
2. ``file_size``: median and IQR of the PNG bytes per method (a design showing a model pair, trust:
   per method and model); the
   largest median may be at most :data:`SIZE_RATIO_MAX` times the smallest (a size that depends
   on the method beyond what its pictures show points at an encoding difference).
3. ``position_balance`` (the design's ``position_balance``): ``categories`` (discrimination): in
   the main items' images, each category's box is on the left (of the other category's box) in
   about half of its images; ``target`` (trust): the category a trial is about
   (``Design.layout_target``; trust: the class both robots predicted) is the left object in about
   half of the main items:
   ``|left - right| <= max(1, POSITION_TOLERANCE * n)`` (trust: or a two-sided binomial
   ``p >= TRUST_SIDE_ALPHA``; a trust trial has no right answer that the side could give away).
4. ``catch_lookalike``: a class-balanced logistic regression on simple picture statistics
   (``validity_stats.FEATURE_NAMES``), cross-validated, tells catch stimuli from main stimuli no
   better than chance: fails when the balanced accuracy is at least ``0.5 + CATCH_MARGIN`` and
   the permutation test gives ``p < CATCH_ALPHA``.
5. ``blind_observer`` (discrimination): observers that never read the map's content
   (``validity_stats.layout_observers``, plus "always the first option shown" on the stored
   option orders, or simulated draws before anyone took part) answer the main items no better
   than 50%: fails when one reaches ``0.5 + OBSERVER_MARGIN`` with one-sided binomial
   ``p < OBSERVER_ALPHA``.
6. ``robot_a_side`` (trust): the pair's model A is shown as Robot A in about half of the trials:
   the stored sides of answered and leased main assignments, and :data:`SIMULATED_DRAWS` fresh
   draws of the allocation's own choice; fails when one deviates from 50% by more than
   ``ROBOT_MARGIN`` with two-sided binomial ``p < ROBOT_ALPHA``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from django.core.files.storage import default_storage
from django.utils import timezone

from studies.designs import design_for
from studies.models import Assignment, Image, Item, Stimulus, Study

logger = logging.getLogger(__name__)

#: Bump when a rule or a threshold changes: stored reports then count as stale.
AUDIT_VERSION = 1
#: file_size: the largest per-method median at most this many times the smallest. Methods' pictures
#: differ by design (grey gradient images vs colour overlays on the photo: 2-3.5x in the demo, which
#: tells a worker nothing the picture does not); a larger spread points at an encoding difference.
SIZE_RATIO_MAX = 4.0
#: position_balance: |left - right| at most this fraction of a category's images (at least 1).
POSITION_TOLERANCE = 0.2
#: position_balance, trust: the predicted class's side fails only when also significant (binomial
#: p < alpha): a trust trial has no right answer to leak, and the planner can choose the side only
#: where both objects qualify, so a small study cannot always be balanced.
TRUST_SIDE_ALPHA = 0.05
#: catch_lookalike: fail at balanced accuracy >= 0.5 + margin and permutation p < alpha.
CATCH_MARGIN = 0.15
CATCH_ALPHA = 0.05
CATCH_PERMUTATIONS = 300
#: Pictures per group (catch, main) read for the statistics (a seeded sample beyond that).
CATCH_MAX_PICTURES = 400
#: blind_observer: fail at accuracy >= 0.5 + margin and one-sided binomial p < alpha.
OBSERVER_MARGIN = 0.10
OBSERVER_ALPHA = 0.05
#: robot_a_side: fail when |share - 0.5| > margin and two-sided binomial p < alpha.
ROBOT_MARGIN = 0.05
ROBOT_ALPHA = 0.01
#: Fresh draws of the allocation's random choices (Robot A side, option order) to simulate.
SIMULATED_DRAWS = 2000

Status = Literal["pass", "fail", "n/a"]
SHOWN = (Assignment.Status.ANSWERED, Assignment.Status.LEASED)


@dataclass
class ValidityCheck:
    """One rule: what was measured, the figure, the threshold and the verdict."""

    code: str
    title: str
    measured: str
    figure: str
    threshold: str
    status: Status
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"[{self.status.upper():4}] {self.code}: {self.figure} (threshold: {self.threshold})"


@dataclass
class ValidityReport:
    """The audit of one study; ``passed`` when no check failed."""

    study_id: int
    ran_at: str
    fingerprint: str
    checks: list[ValidityCheck]
    version: int = AUDIT_VERSION

    @property
    def passed(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    @property
    def failed(self) -> list[ValidityCheck]:
        return [check for check in self.checks if check.status == "fail"]

    def summary(self) -> str:
        if self.passed:
            return f"passed ({len(self.checks)} checks, {self.ran_at})"
        return f"FAILED: {', '.join(c.code for c in self.failed)} ({self.ran_at})"

    def lines(self) -> list[str]:
        """The report as text: per check its verdict line, what was measured and the details."""
        out: list[str] = []
        for check in self.checks:
            out.append(check.line())
            out.append(f"       measured: {check.measured}")
            out.extend(f"       - {detail}" for detail in check.details)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "study_id": self.study_id, "ran_at": self.ran_at,
                "fingerprint": self.fingerprint, "passed": self.passed,
                "checks": [asdict(check) for check in self.checks]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidityReport | None:
        """The report stored in ``Study.validity_report``, or None (empty, or of another audit version)."""
        if not data or data.get("version") != AUDIT_VERSION:
            return None
        try:
            checks = [ValidityCheck(**check) for check in data["checks"]]
            return cls(study_id=int(data["study_id"]), ran_at=str(data["ran_at"]),
                       fingerprint=str(data["fingerprint"]), checks=checks)  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None


# --- entry points ------------------------------------------------------------------------------


def study_validity_audit(*, study_id: int, store: bool = True) -> ValidityReport:
    """Measure the study (every check of the module docstring) and store the report.

    Storing clears ``validity_acknowledged`` when the fingerprint (items, stimuli, boxes)
    differs from the stored report's. Reads stimulus files; writes only the two study fields.
    """
    study = Study.objects.select_related("model_pair").get(pk=study_id)
    items = list(
        study.items.select_related("stimulus_a", "stimulus_b", "stimulus_c", "stimulus_d", "image").order_by("pk")
    )
    fingerprint = study_fingerprint(study=study, items=items)
    context = _Context(study=study, items=items)
    checks = [
        _check_format(context),
        _check_file_size(context),
        _check_position_balance(context),
        _check_catch_lookalike(context),
        _check_blind_observer(context),
        _check_robot_a_side(context),
    ]
    report = ValidityReport(study_id=study.pk, ran_at=timezone.now().isoformat(timespec="seconds"),
                            fingerprint=fingerprint, checks=checks)  # fmt: skip
    if store:
        previous = ValidityReport.from_dict(study.validity_report or {})
        fields: dict[str, Any] = {"validity_report": report.to_dict()}
        if previous is None or previous.fingerprint != fingerprint:
            fields["validity_acknowledged"] = False
        Study.objects.filter(pk=study.pk).update(**fields)
    logger.info("validity audit of study %s: %s", study.pk, report.summary())
    return report


def validity_report_current(*, study_id: int) -> tuple[ValidityReport, bool]:
    """The stored report when it was measured on the study's current items and stimuli, else a
    new one (run and stored now); ``(report, ran_now)``."""
    study = Study.objects.get(pk=study_id)
    stored = ValidityReport.from_dict(study.validity_report or {})
    if stored is not None and stored.fingerprint == study_fingerprint(study=study):
        return stored, False
    return study_validity_audit(study_id=study_id), True


def validity_publish_refusal(*, study_id: int, acknowledged: bool | None = None) -> str | None:
    """Why the study may not go live yet, or None.

    Reruns the audit when the stored report is missing or stale. A failed report blocks unless
    the researcher acknowledged it (``acknowledged``, else the stored
    ``Study.validity_acknowledged``) *after* it was measured: a report that had to be run now has
    not been seen, so it blocks once, whatever the flag says.
    """
    report, ran_now = validity_report_current(study_id=study_id)
    if report.passed:
        return None
    if acknowledged is None:
        acknowledged = Study.objects.filter(pk=study_id).values_list("validity_acknowledged", flat=True).get()
    if acknowledged and not ran_now:
        return None
    study_name = Study.objects.filter(pk=study_id).values_list("name", flat=True).get()
    failures = "; ".join(f"{check.code}: {check.figure} (threshold: {check.threshold})" for check in report.failed)
    when = "it ran now, before publishing" if ran_now else f"it ran {report.ran_at}"
    return (f"study {study_name!r} failed its validity audit ({when}): {failures}. Fix the stimuli and prepare "
            f"again, or read the figures (study page, 'Validity audit'; manage.py audit_stimuli {study_id}) and "
            f"tick 'validity acknowledged' to publish anyway.")


def study_validity_acknowledge(*, study_id: int, acknowledged: bool = True) -> None:
    """Record the researcher's explicit choice to publish despite the audit's failures."""
    Study.objects.filter(pk=study_id).update(validity_acknowledged=acknowledged)


def study_fingerprint(*, study: Study, items: list[Item] | None = None) -> str:
    """SHA-256 over what the audit measures: the audit version, every item (role, method, image,
    target, options, answer, stimulus hashes: slots a, b and any further slot of the design, e.g.
    distinction's c, d) and the images' size and boxes."""
    slots = ["a", "b", *(slot for slot in design_for(study).stimulus_slots if slot not in ("a", "b"))]
    if items is None:
        rows = list(study.items.order_by("pk").values_list(
            "pk", "role", "method", "image_id", "target_class", "options", "correct_option",
            *(f"stimulus_{slot}__sha256" for slot in slots)))  # fmt: skip
    else:
        rows = [(i.pk, i.role, i.method, i.image_id, i.target_class, i.options, i.correct_option,
                 *(getattr(i, f"stimulus_{slot}").sha256 if getattr(i, f"stimulus_{slot}_id") else None
                   for slot in slots))
                for i in items]  # fmt: skip
    image_ids = sorted({row[3] for row in rows})
    images = list(Image.objects.filter(pk__in=image_ids).order_by("pk").values_list("pk", "sha256", "width", "boxes"))
    payload = json.dumps([AUDIT_VERSION, rows, images], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


# --- the checks -------------------------------------------------------------------------------


class _Context:
    """What the checks share: the study, its items by role, and each stimulus's size and declared
    format (read once; the bytes themselves are not kept, a study may have thousands)."""

    def __init__(self, *, study: Study, items: list[Item]):
        self.study = study
        self.items = items
        self.design = design_for(study)
        #: stimuli differ by model as well as by method (a design that shows a model pair)
        self.per_model = self.design.models_from == "pair"
        self._facts: dict[int, tuple[int, Any] | None] = {}
        #: the item slots whose stimuli are measured: a, b and any further slot of the design
        self.slots = ["a", "b", *(slot for slot in self.design.stimulus_slots if slot not in ("a", "b"))]

    def by_role(self, role: str) -> list[Item]:
        return [item for item in self.items if item.role == role]

    def stimuli(self, roles: tuple[str, ...] | None = None) -> list[tuple[Item, Stimulus]]:
        """``(item, stimulus)`` for each distinct stimulus shown by items of ``roles`` (all when None)."""
        seen: set[int] = set()
        out: list[tuple[Item, Stimulus]] = []
        for item in self.items:
            if roles is not None and item.role not in roles:
                continue
            for stimulus in (getattr(item, f"stimulus_{slot}") for slot in self.slots):
                if stimulus is not None and stimulus.pk not in seen:
                    seen.add(stimulus.pk)
                    out.append((item, stimulus))
        return out

    @staticmethod
    def data(stimulus: Stimulus) -> bytes | None:
        """The stimulus file's bytes, or None when it cannot be read."""
        try:
            with default_storage.open(stimulus.file.name, "rb") as handle:
                return handle.read()
        except (OSError, ValueError):
            return None

    def facts(self, stimulus: Stimulus) -> tuple[int, Any] | None:
        """``(bytes, PngFormat or None)`` of a stimulus file, or None when it cannot be read."""
        from studies.analysis.validity_stats import png_format

        if stimulus.pk not in self._facts:
            data = self.data(stimulus)
            self._facts[stimulus.pk] = None if data is None else (len(data), png_format(data))
        return self._facts[stimulus.pk]


def _kb(value: float) -> str:
    return f"{value / 1000:.1f} kB"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _p(value: float) -> str:
    return "n/a" if value != value else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")


def _check_format(ctx: _Context) -> ValidityCheck:
    measured = ("width, height, mode, bit depth and PNG metadata chunks of every stimulus the study shows "
                "(main, catch and practice; every method and model)")  # fmt: skip
    threshold = "one format for all of them"
    stimuli = ctx.stimuli()
    if not stimuli:
        return ValidityCheck("stimulus_format", "Identical stimulus format", measured, "no stimuli (prepare the study)",
                             threshold, "fail")  # fmt: skip
    groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    unreadable: list[str] = []
    for item, stimulus in stimuli:
        facts = ctx.facts(stimulus)
        found = facts[1] if facts is not None else None
        where = f"{item.role} {stimulus.method}" + (f" {_model_name(ctx, stimulus)}" if ctx.per_model else "")
        if found is None:
            unreadable.append(f"{stimulus.file.name} ({where}): {'missing' if facts is None else 'not a PNG'}")
            continue
        groups[found.label][where] += 1
    details = [f"{label}: " + ", ".join(f"{where} x{n}" for where, n in sorted(members.items()))
               for label, members in sorted(groups.items(), key=lambda kv: -sum(kv[1].values()))]  # fmt: skip
    details += [f"unreadable: {line}" for line in unreadable[:20]]
    ok = len(groups) == 1 and not unreadable
    figure = (f"{len(groups)} format(s) among {len(stimuli)} stimuli" if not unreadable
              else f"{len(unreadable)} of {len(stimuli)} stimuli missing or not PNG")  # fmt: skip
    if ok:
        figure = f"1 format among {len(stimuli)} stimuli: {next(iter(groups))}"
    return ValidityCheck("stimulus_format", "Identical stimulus format", measured, figure, threshold,
                         "pass" if ok else "fail", details,
                         {"formats": {label: sum(m.values()) for label, m in groups.items()},
                          "unreadable": len(unreadable)})  # fmt: skip


def _model_name(ctx: _Context, stimulus: Stimulus) -> str:
    pair = ctx.study.model_pair
    if pair is not None:
        return "model A" if stimulus.model_id == pair.model_a_id else "model B"
    return "model"


def _check_file_size(ctx: _Context) -> ValidityCheck:
    from studies.analysis.validity_stats import size_summary

    per_model = ctx.per_model
    measured = ("PNG bytes of the main stimuli per method" + (" and model" if per_model else "")
                + ": median and interquartile range")  # fmt: skip
    threshold = f"largest median <= {SIZE_RATIO_MAX:g} x smallest median"
    sizes: dict[str, list[int]] = defaultdict(list)
    for _item, stimulus in ctx.stimuli((Item.Role.MAIN,)):
        facts = ctx.facts(stimulus)
        if facts is None:
            continue
        key = f"{stimulus.method} / {_model_name(ctx, stimulus)}" if per_model else stimulus.method
        sizes[key].append(facts[0])
    if not sizes:
        return ValidityCheck("file_size", "File size per method", measured, "no main stimuli", threshold, "fail")
    summaries = {key: size_summary(values) for key, values in sorted(sizes.items())}
    medians = {key: s.median for key, s in summaries.items()}
    largest, smallest = max(medians, key=medians.get), min(medians, key=medians.get)
    ratio = medians[largest] / medians[smallest] if medians[smallest] > 0 else float("inf")
    details = [f"{key}: median {_kb(s.median)} (IQR {_kb(s.q1)}-{_kb(s.q3)}, n={s.n})" for key, s in summaries.items()]
    catch_sizes = [f[0] for _i, s in ctx.stimuli((Item.Role.CATCH,)) if (f := ctx.facts(s)) is not None]
    if catch_sizes:
        s = size_summary(catch_sizes)
        details.append(f"(catch stimuli, for comparison: median {_kb(s.median)}, IQR {_kb(s.q1)}-{_kb(s.q3)}, n={s.n};"
                       " catch vs main is judged by catch_lookalike)")  # fmt: skip
    figure = (f"median {_kb(medians[largest])} ({largest}) vs {_kb(medians[smallest])} ({smallest}): "
              f"ratio {ratio:.2f}" if len(medians) > 1 else f"one group: median {_kb(medians[largest])}")  # fmt: skip
    return ValidityCheck("file_size", "File size per method", measured, figure, threshold,
                         "pass" if ratio <= SIZE_RATIO_MAX else "fail", details,
                         {"ratio": ratio, "groups": {k: asdict(s) for k, s in summaries.items()}})  # fmt: skip


def _layouts(ctx: _Context) -> tuple[dict[int, Any], list[tuple[Any, str, str]]]:
    """The main items' two-category images as layouts, and the distinct ``(layout, target, other)``
    trials (``Design.layout_target``; discrimination: the explained option; trust: the class both
    robots predicted)."""
    from studies.analysis.validity_stats import layout_from_boxes

    layouts: dict[int, Any] = {}
    trials: dict[tuple[int, str], tuple[Any, str, str]] = {}
    for item in ctx.by_role(Item.Role.MAIN):
        image = item.image
        found = ctx.design.layout_target(item)
        if found is None:
            continue
        options, target, other = found
        if image.pk not in layouts:
            layouts[image.pk] = layout_from_boxes(str(image.pk), image.width, options, image.boxes or [])
        trials[(image.pk, target)] = (layouts[image.pk], target, other)
    return layouts, list(trials.values())


def _side_line(label: str, left: int, right: int, centre: int, unit: str) -> tuple[str, bool, float]:
    """A detail line for one left/right count, whether it breaks the threshold, and its left share."""
    from studies.analysis.validity_stats import side_balance_allowed

    placed = left + right
    imbalance, allowed = abs(left - right), side_balance_allowed(placed, POSITION_TOLERANCE)
    line = f"{label}: left in {left} of {placed + centre} {unit}, right in {right}"
    if centre:
        line += f", centre (one above the other, or no box) in {centre}"
    bad = placed > 0 and imbalance > allowed
    return line + (f" - imbalance {imbalance} > {allowed}" if bad else ""), bad, (left / placed if placed else 0.5)


def _check_position_balance(ctx: _Context) -> ValidityCheck:
    from studies.analysis.validity_stats import category_side_counts

    rule = (f"|left - right| <= max(1, {POSITION_TOLERANCE:g} x n), i.e. left share "
            f"{_pct(0.5 - POSITION_TOLERANCE / 2)}-{_pct(0.5 + POSITION_TOLERANCE / 2)}")  # fmt: skip
    categories = ctx.design.position_balance == "categories"
    target_name = ctx.design.target_name
    if categories:
        measured = ("per category, over the main items' images: how often its box centre lies left of the other "
                    "category's (centres closer than 10% of the width: one above the other, neither side)")  # fmt: skip
        threshold = f"{rule}, for every category"
    else:
        measured = (f"over the main items: how often {ctx.design.target_description} is "
                    "the left object of its image; per category counts for information")  # fmt: skip
        threshold = (f"{rule}, for the {target_name}'s side, unless a two-sided binomial test cannot tell it from "
                     f"50% (p >= {TRUST_SIDE_ALPHA:g})")  # fmt: skip
    title = "Category position balance"
    layouts, trials = _layouts(ctx)
    counts = category_side_counts(layouts.values())
    if not counts:
        return ValidityCheck("position_balance", title, measured, "no two-category images with boxes among the main "
                             "items: position unknown", threshold, "n/a")  # fmt: skip
    target_sides = {"left": 0, "right": 0, "centre": 0}
    for layout, target, _other in trials:
        target_sides[layout.side(target) or "centre"] += 1
    target_line, target_bad, target_share = _side_line(
        target_name, target_sides["left"], target_sides["right"],
        target_sides["centre"], "items")  # fmt: skip
    details: list[str] = []
    failed: list[str] = []
    worst: tuple[float, str] = (-1.0, "")
    for category, count in counts.items():
        line, bad, share = _side_line(category, count["left"], count["right"], count["centre"], "images")
        details.append(line if categories else line.split(" - imbalance")[0])
        placed = count["left"] + count["right"]
        if categories and bad:
            failed.append(category)
        if categories and abs(share - 0.5) > worst[0]:
            worst = (abs(share - 0.5), f"{category} left in {count['left']} of {placed} placed images ({_pct(share)})")
    details.append(target_line)
    if categories:
        figure = f"most unbalanced: {worst[1]}"
        if failed:
            figure += f"; {len(failed)} of {len(counts)} categories outside the threshold"
    else:
        from studies.analysis.validity_stats import binomial_p

        placed = target_sides["left"] + target_sides["right"]
        p_side = binomial_p(target_sides["left"], placed, 0.5)
        figure = (f"{target_name} on the left in {target_sides['left']} of {placed} placed items "
                  f"({_pct(target_share)}, p = {_p(p_side)})")  # fmt: skip
        if target_bad and p_side < TRUST_SIDE_ALPHA:
            failed.append(target_name)
    return ValidityCheck("position_balance", title, measured, figure, threshold, "fail" if failed else "pass",
                         details, {"counts": counts, "target_sides": target_sides, "failed": failed})  # fmt: skip


def _check_catch_lookalike(ctx: _Context) -> ValidityCheck:
    import numpy as np

    from studies.analysis.validity_stats import FEATURE_NAMES, classifier_audit, image_statistics

    measured = ("cross-validated accuracy of a class-balanced logistic regression that tells catch stimuli from main "
                f"stimuli by {', '.join(FEATURE_NAMES)}; chance = the majority-class rate (accuracy) and 50% "
                "(balanced accuracy)")  # fmt: skip
    threshold = (f"fails at balanced accuracy >= {_pct(0.5 + CATCH_MARGIN)} with permutation p < {CATCH_ALPHA:g}")
    title = "Catch trials look like main trials"
    catch = ctx.stimuli((Item.Role.CATCH,))
    main = ctx.stimuli((Item.Role.MAIN,))
    if not catch:
        return ValidityCheck("catch_lookalike", title, measured, "no catch items", threshold, "n/a")
    rng = np.random.default_rng(ctx.study.seed % (2**32))

    def sample(pairs: list) -> list:
        if len(pairs) <= CATCH_MAX_PICTURES:
            return pairs
        return [pairs[i] for i in sorted(rng.choice(len(pairs), CATCH_MAX_PICTURES, replace=False))]

    rows: list[np.ndarray] = []
    labels: list[int] = []
    for label, pairs in ((1, sample(catch)), (0, sample(main))):
        for _item, stimulus in pairs:
            data = ctx.data(stimulus)
            if data is None:
                continue
            try:
                rows.append(image_statistics(data))
            except (OSError, ValueError):
                continue
            labels.append(label)
    y = np.asarray(labels, dtype=np.intp)
    n_catch, n_main = int(np.sum(y == 1)), int(np.sum(y == 0))
    result = classifier_audit(np.vstack(rows), y, seed=int(ctx.study.seed) % (2**32), permutations=CATCH_PERMUTATIONS) \
        if rows else None
    if result is None:
        return ValidityCheck("catch_lookalike", title, measured,
                             f"too few pictures to cross-validate ({n_catch} catch, {n_main} main)", threshold, "n/a")
    x = np.vstack(rows)
    means_catch, means_main = x[y == 1].mean(axis=0), x[y == 0].mean(axis=0)
    details = [
        f"{n_catch} catch and {n_main} main stimuli, {result.folds}-fold cross-validation",
        f"accuracy {_pct(result.accuracy)} vs majority-class rate {_pct(result.majority_rate)} "
        f"(one-sided binomial p = {_p(result.p_binomial)})",
        f"balanced accuracy {_pct(result.balanced_accuracy)} vs 50% (permutation p = {_p(result.p_permutation)}, "
        f"{result.permutations} permutations)",
        "mean statistics, catch vs main: " + "; ".join(
            f"{name} {a:.3g} vs {b:.3g}" for name, a, b in zip(FEATURE_NAMES, means_catch, means_main)),
    ]  # fmt: skip
    failed = result.balanced_accuracy >= 0.5 + CATCH_MARGIN and result.p_permutation < CATCH_ALPHA
    figure = (f"balanced accuracy {_pct(result.balanced_accuracy)} (p = {_p(result.p_permutation)}); accuracy "
              f"{_pct(result.accuracy)} vs chance {_pct(result.majority_rate)}")  # fmt: skip
    return ValidityCheck("catch_lookalike", title, measured, figure, threshold, "fail" if failed else "pass", details,
                         asdict(result))  # fmt: skip


def _simulated_choices(ctx: _Context, items: list[Item], draws: int) -> list[tuple[Item, Any]]:
    """``draws`` fresh draws of the allocation's per-assignment choices over ``items`` (new tokens)."""
    from studies.lib.choices import assignment_choices
    from studies.models import new_token

    out = []
    per_participant = max(1, ctx.study.trials_per_participant)
    token = new_token()
    for draw in range(draws):
        if draw % per_participant == 0:
            token = new_token()
        item = items[draw % len(items)]
        out.append((item, assignment_choices(study=ctx.study, participant_token=token, slot=draw % per_participant,
                                             item=item)))  # fmt: skip
    return out


def _check_blind_observer(ctx: _Context) -> ValidityCheck:
    from studies.analysis.validity_stats import ObserverResult, layout_observers

    measured = ("accuracy on the main discrimination items of observers that never read the map's content: "
                "layout-only strategies on each distinct (image, target), and 'always the first option shown' on "
                "the stored option orders (simulated draws before anyone took part)")  # fmt: skip
    threshold = f"fails at accuracy >= {_pct(0.5 + OBSERVER_MARGIN)} with one-sided binomial p < {OBSERVER_ALPHA:g} (chance 50%)"
    title = "Heatmap-blind observer"
    if (reason := ctx.design.validity_not_applicable.get("blind_observer")) is not None:
        return ValidityCheck("blind_observer", title, measured, f"not applicable ({reason})", threshold, "n/a")
    _layouts_by_image, trials = _layouts(ctx)
    observers: list[ObserverResult] = []
    if trials:
        observers += layout_observers(trials)
    main = [item for item in ctx.by_role(Item.Role.MAIN) if len(item.options or []) == 2]
    stored = list(Assignment.objects.filter(item__in=main, status__in=SHOWN).values_list("option_order", "item__correct_option"))
    if stored:
        first = sum(1.0 for order, correct in stored if order and order[0] == correct)
        observers.append(ObserverResult("first option", "always picks the option shown first (stored assignments)",
                                        len(stored), first))  # fmt: skip
    elif main:
        draws = _simulated_choices(ctx, main, SIMULATED_DRAWS)
        first = sum(1.0 for item, choice in draws if choice.option_order and choice.option_order[0] == item.correct_option)
        observers.append(ObserverResult("first option", f"always picks the option shown first ({len(draws)} simulated "
                                        "draws of the allocation's option order)", len(draws), first))  # fmt: skip
    if not observers:
        return ValidityCheck("blind_observer", title, measured, "no two-option main items", threshold, "n/a")
    details = [f"{o.name}: {_pct(o.accuracy)} of {o.n} (p = {_p(o.p_value())}) - {o.description}" for o in observers]
    failing = [o for o in observers if o.accuracy >= 0.5 + OBSERVER_MARGIN - 1e-12 and o.p_value() < OBSERVER_ALPHA]
    best = max(observers, key=lambda o: (o.accuracy, -o.p_value()))
    figure = f"best: '{best.name}' {_pct(best.accuracy)} of {best.n} (p = {_p(best.p_value())}) vs chance 50%"
    return ValidityCheck("blind_observer", title, measured, figure, threshold, "fail" if failing else "pass", details,
                         {"observers": [{"name": o.name, "n": o.n, "accuracy": o.accuracy, "p": o.p_value()}
                                        for o in observers]})  # fmt: skip


def _check_robot_a_side(ctx: _Context) -> ValidityCheck:
    from studies.analysis.validity_stats import binomial_p

    measured = ("how often the pair's model A is shown as Robot A (left): stored sides of the answered and leased main "
                f"assignments, and {SIMULATED_DRAWS} fresh draws of the allocation's choice")  # fmt: skip
    threshold = f"fails at |share - 50%| > {_pct(ROBOT_MARGIN)} with two-sided binomial p < {ROBOT_ALPHA:g}"
    title = "Robot A side balance"
    if (reason := ctx.design.validity_not_applicable.get("robot_a_side")) is not None:
        return ValidityCheck("robot_a_side", title, measured, f"not applicable ({reason})", threshold, "n/a")
    main = ctx.by_role(Item.Role.MAIN)
    samples: list[tuple[str, int, int]] = []
    stored = list(Assignment.objects.filter(item__study=ctx.study, item__role=Item.Role.MAIN, status__in=SHOWN,
                                            model_a_shown_left__isnull=False).values_list("model_a_shown_left", flat=True))  # fmt: skip
    if stored:
        samples.append(("stored assignments", sum(bool(v) for v in stored), len(stored)))
    if main:
        draws = _simulated_choices(ctx, main, SIMULATED_DRAWS)
        samples.append(("simulated draws", sum(bool(c.model_a_shown_left) for _i, c in draws), len(draws)))
    if not samples:
        return ValidityCheck("robot_a_side", title, measured, "no main items", threshold, "n/a")
    details = []
    failed = False
    for name, left, n in samples:
        share, p = left / n, binomial_p(left, n, 0.5)
        bad = abs(share - 0.5) > ROBOT_MARGIN and p < ROBOT_ALPHA
        failed |= bad
        details.append(f"{name}: model A left in {left} of {n} ({_pct(share)}), p = {_p(p)}" + (" - unbalanced" if bad else ""))
    figure = "; ".join(line.split(" - ")[0] for line in details)
    return ValidityCheck("robot_a_side", title, measured, figure, threshold, "fail" if failed else "pass", details,
                         {"samples": [{"name": n_, "left": l_, "n": c_} for n_, l_, c_ in samples]})  # fmt: skip

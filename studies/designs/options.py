"""``Study.explainer_options`` read once, typed and checked: :class:`StudyOptions`.

``explainer_options`` is a JSON object; each key is either an option below or the name of an
engine method (``explainers.registry.METHODS``) whose value is that method's options for
``explain`` (an object, e.g. ``{"rise": {"masks": 2000}}``; ``occlusion``'s are also the
evaluation's occlusion reference). The options:

- ``display_size`` (int >= 1): side of the rendered stimuli; default the largest model input, at least 224.
- ``class_map`` (object: category -> class id >= 0): overrides the model's class-name match.
- ``chunk_size`` (int >= 1, default 8): images per gpu chunk.
- ``top_k`` (int >= 1, default 5): predictions stored per (model, image).
- ``exact`` (bool, default false): maps from the model as given, not the engine's fast copy.
- ``overlay_base`` (``"gray"`` default, or ``"color"``): what a colour overlay is blended with.
- ``evaluation`` (object): the automatic evaluation's settings, keys :data:`EVALUATION_KEYS`
  (the integer ones >= 1).

A key set to ``null`` takes its default. Anything else raises :class:`OptionsError` (a
``ValueError``) naming the key; ``Study.clean`` turns it into a form error on
``explainer_options``, and the pipeline into a failed job with the same message.

A design whose studies read more options subclasses :class:`StudyOptions` (adding fields and
extending :meth:`StudyOptions.parse`) and names it in ``Design.options_class``.

No Django, no torch: the web process, the admin form and the workers all read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from explainers.registry import METHODS

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_OVERLAY_BASE",
    "DEFAULT_TOP_K",
    "EVALUATION_INT_KEYS",
    "EVALUATION_KEYS",
    "OVERLAY_BASES",
    "OptionsError",
    "StudyOptions",
]

OVERLAY_BASES = ("gray", "color")
DEFAULT_OVERLAY_BASE = "gray"
DEFAULT_CHUNK_SIZE = 8
DEFAULT_TOP_K = 5
#: The keys of ``explainer_options["evaluation"]`` (``max_images`` limits the images; the rest
#: are ``EvaluationSettings`` fields).
EVALUATION_KEYS = ("steps", "baseline", "score", "sanity_units", "sanity_steps", "batch_size", "explain_batch",
                   "max_images")
EVALUATION_INT_KEYS = frozenset({"steps", "sanity_units", "sanity_steps", "batch_size", "explain_batch", "max_images"})


class OptionsError(ValueError):
    """A bad ``explainer_options`` value; the message names the key. ``key``: that key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _positive_int(key: str, value: Any, *, where: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionsError(key, f"explainer_options{where}[{key!r}] must be a whole number >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class StudyOptions:
    """A study's ``explainer_options``, parsed (:meth:`parse`); read-only, defaults filled in."""

    #: the option keys (every other key is a method's options)
    KEYS: ClassVar[frozenset[str]] = frozenset(
        {"display_size", "class_map", "chunk_size", "top_k", "exact", "overlay_base", "evaluation"})

    display_size: int | None = None
    class_map: Mapping[str, int] = field(default_factory=dict)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    top_k: int = DEFAULT_TOP_K
    exact: bool = False
    overlay_base: str = DEFAULT_OVERLAY_BASE
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    #: engine method -> its options for ``explain``
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any) -> StudyOptions:
        """Read ``explainer_options`` (``None`` or ``{}``: every default). Raises :class:`OptionsError`."""
        return cls(**cls.fields_of(raw))

    @classmethod
    def fields_of(cls, raw: Any) -> dict[str, Any]:
        """The constructor arguments :meth:`parse` reads from ``raw``; a subclass adds its own keys
        (add them to ``KEYS``, call ``super().fields_of(raw)``, then read ``raw`` for its keys)."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise OptionsError("", f"explainer_options must be an object (a JSON dict), got {type(raw).__name__}")
        out: dict[str, Any] = {}

        def given(key: str) -> Any:
            return raw.get(key)

        if (value := given("display_size")) is not None:
            out["display_size"] = _positive_int("display_size", value)
        if (value := given("chunk_size")) is not None:
            out["chunk_size"] = _positive_int("chunk_size", value)
        if (value := given("top_k")) is not None:
            out["top_k"] = _positive_int("top_k", value)
        if (value := given("exact")) is not None:
            if not isinstance(value, bool):
                raise OptionsError("exact", f"explainer_options['exact'] must be true or false, got {value!r}")
            out["exact"] = value
        if (value := given("overlay_base")) is not None:
            if value not in OVERLAY_BASES:
                raise OptionsError("overlay_base",
                                   f"explainer_options['overlay_base'] must be one of {OVERLAY_BASES}, got {value!r}")
            out["overlay_base"] = str(value)
        if (value := given("class_map")) is not None:
            if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                    for k, v in value.items()):
                raise OptionsError("class_map", "explainer_options['class_map'] must map category names to class "
                                                f"ids (whole numbers >= 0), got {value!r}")
            out["class_map"] = dict(value)
        if (value := given("evaluation")) is not None:
            out["evaluation"] = cls._evaluation(value)
        methods: dict[str, dict[str, Any]] = {}
        for key, value in raw.items():
            if key in cls.KEYS:
                continue
            if key not in METHODS:
                raise OptionsError(str(key), f"explainer_options has an unknown key {key!r}: neither an option "
                                             f"({', '.join(sorted(cls.KEYS))}) nor a method")
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise OptionsError(key, f"explainer_options[{key!r}] must be an object of the method's options, "
                                        f"got {value!r}")
            methods[key] = dict(value)
        out["methods"] = methods
        return out

    @staticmethod
    def _evaluation(value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise OptionsError("evaluation", f"explainer_options['evaluation'] must be an object, got {value!r}")
        unknown = set(value) - set(EVALUATION_KEYS)
        if unknown:
            raise OptionsError("evaluation", f"explainer_options['evaluation'] has unknown keys {sorted(unknown)}; "
                                             f"known: {sorted(EVALUATION_KEYS)}")
        for key in EVALUATION_INT_KEYS & set(value):
            if value[key] is not None:
                _positive_int(key, value[key], where="['evaluation']")
        return {k: v for k, v in value.items() if v is not None}

    def method_options(self, method: str) -> dict[str, Any]:
        """The options of engine method ``method`` for ``explain`` (a copy; ``{}`` when none)."""
        return dict(self.methods.get(method, {}))

"""The registry is the single source of the engine's plan (issue #15).

Every registered method's pass, backward rule, product factors and function are read from its
:class:`~explainers.registry.MethodSpec`; changing only a spec changes what ``explain()`` computes,
and no other module of ``explainers`` keeps a table of method names.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from explainers import engine
from explainers.methods import smooth
from explainers.registry import METHODS, SHARED_FAMILIES, MethodSpec, check_registry

ROOT = Path(__file__).resolve().parents[2] / "explainers"

# How each pass calls its function: the positional parameters it is given, then keyword options.
POSITIONAL = {"per_target": 3, "all_targets": 3, "layer": 4, "activation": 7, "stimulus": 3}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return model.eval(), images


def _run(net, methods, **kwargs):
    model, images = net
    return engine.explain(model, images, [1, 3], methods, "4", fast=False, **kwargs)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_planned_from_its_spec(name):
    spec = METHODS[name]
    route = engine.pass_of(spec)
    assert (route == "shared") == (spec.family in SHARED_FAMILIES)
    if spec.family in ("gradient", "product"):
        assert engine._input_rules([name]) == [spec.backward_rule]
    else:
        assert engine._input_rules([name]) == []
    cams = engine._cams_needed([name])
    assert cams == ([name] if spec.family == "cam" else [f for f in spec.requires if METHODS[f].family == "cam"])
    if spec.function is None:
        assert spec.family in ("gradient", "product")
        with pytest.raises(ValueError, match="shared pass"):
            engine.method_function(name)
        return
    module, attribute = spec.function.split(":")
    function = engine.method_function(name)
    assert function.__module__ == module
    assert function.__name__ == attribute
    parameters = inspect.signature(function).parameters.values()
    positional = [p for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    keyword = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if route == "shared":  # a CAM: f(A, dy/dA), no options
        assert spec.family == "cam"
        assert len(positional) == 2
        assert not keyword
    else:
        assert len(positional) == POSITIONAL[route]
        assert "autocast_dtype" in keyword


def test_families_map_to_passes():
    routes: dict[str, set[str]] = {}
    for spec in METHODS.values():
        routes.setdefault(spec.family, set()).add(engine.pass_of(spec))
    assert routes == {"gradient": {"shared"}, "cam": {"shared"}, "product": {"shared"}, "sampled": {"per_target"},
                      "rule": {"per_target", "layer"}, "perturbation": {"all_targets"},
                      "activation": {"activation"}, "example": {"stimulus"}}
    assert {engine.pass_of(s) for s in METHODS.values() if s.family == "rule" and s.needs_layer} == {"layer"}


def test_smoothgrad_bases_are_the_gradient_family():
    assert smooth.smoothgrad_bases() == {n: s for n, s in METHODS.items() if s.family == "gradient"}


def test_a_spec_only_change_changes_the_plan(net, monkeypatch):
    reference = _run(net, ["saliency", "guided_backprop", "deconvnet", "gradcam", "gradcam_plus_plus",
                           "deconv_gradcam"])
    patch = {
        # the rule of saliency's backward
        "saliency": dataclasses.replace(METHODS["saliency"], backward_rule="guided"),
        # the function a CAM calls
        "gradcam": dataclasses.replace(METHODS["gradcam"], function="explainers.methods.cam:gradcam_plus_plus"),
        # a product's factors and rule
        "guided_gradcam": dataclasses.replace(METHODS["guided_gradcam"], backward_rule="deconvnet",
                                              requires=("deconvnet", "gradcam")),
    }
    for name, spec in patch.items():
        monkeypatch.setitem(METHODS, name, spec)
    check_registry(METHODS)
    changed = _run(net, ["saliency", "gradcam", "guided_gradcam"])
    assert not torch.equal(reference["saliency"], reference["guided_backprop"])  # the net tells the rules apart
    torch.testing.assert_close(changed["saliency"], reference["guided_backprop"], rtol=0, atol=0)
    torch.testing.assert_close(changed["gradcam"], reference["gradcam_plus_plus"], rtol=0, atol=0)
    # guided_gradcam now multiplies deconvnet by the (patched) gradcam
    expected = reference["deconvnet"] * reference["gradcam_plus_plus"].unsqueeze(1)
    torch.testing.assert_close(changed["guided_gradcam"], expected, rtol=0, atol=0)


def test_times_input_and_the_smoothgrad_bases_follow_the_spec(net, monkeypatch):
    _, images = net
    before = _run(net, ["saliency", "input_x_gradient"])
    torch.testing.assert_close(before["input_x_gradient"], images * before["saliency"], rtol=0, atol=0)
    monkeypatch.setitem(METHODS, "input_x_gradient", dataclasses.replace(METHODS["input_x_gradient"],
                                                                           times_input=False))
    after = _run(net, ["saliency", "input_x_gradient"])
    torch.testing.assert_close(after["input_x_gradient"], before["saliency"], rtol=0, atol=0)
    options = {"smoothgrad": {"base": "deconvnet", "samples": 2}}
    _run(net, ["smoothgrad"], options=options)
    monkeypatch.setitem(METHODS, "deconvnet", dataclasses.replace(
        METHODS["deconvnet"], family="sampled", backward_rule=None, function="explainers.methods.smooth:smoothgrad"))
    with pytest.raises(ValueError, match="smoothgrad base 'deconvnet' not one of"):
        _run(net, ["smoothgrad"], options=options)


def test_the_pass_family_follows_the_spec(net, monkeypatch):
    # occlusion rerouted as a per-target method: called once per target column with [B] classes
    seen = []

    def spy(runner, images, classes, *, autocast_dtype=None):
        seen.append(tuple(classes.shape))
        return torch.zeros(images.shape[0], *images.shape[-2:])

    monkeypatch.setattr("explainers.methods.perturbation.spy", spy, raising=False)
    monkeypatch.setattr(engine, "_load", functools.cache(engine._load.__wrapped__))  # a fresh cache, restored
    monkeypatch.setitem(METHODS, "occlusion", dataclasses.replace(
        METHODS["occlusion"], family="sampled", function="explainers.methods.perturbation:spy"))
    model, images = net
    out = engine.explain(model, images, [[1, 2], [3, 4]], ["occlusion"], fast=False)
    assert seen == [(2,), (2,)]
    assert out["occlusion"].shape == (2, 2, 16, 16)


def test_inconsistent_specs_are_refused():
    spec = METHODS["guided_gradcam"]
    with pytest.raises(ValueError, match="requires is set exactly"):
        dataclasses.replace(spec, requires=())
    with pytest.raises(ValueError, match="backward_rule is set exactly"):
        dataclasses.replace(METHODS["occlusion"], backward_rule="plain")
    with pytest.raises(ValueError, match="function is set exactly"):
        dataclasses.replace(METHODS["gradcam"], function=None)
    with pytest.raises(ValueError, match="times_input"):
        dataclasses.replace(METHODS["gradcam"], times_input=True)
    with pytest.raises(ValueError, match="perturbs"):
        dataclasses.replace(METHODS["occlusion"], perturbs="input")
    bad = {**METHODS, spec.name: dataclasses.replace(spec, requires=("deconvnet", "gradcam"))}
    with pytest.raises(ValueError, match="product 'guided_gradcam' requires"):
        check_registry(bad)
    check_registry(METHODS)


def _literal_names(node: ast.AST) -> list[str]:
    elements = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", [])
    return [e.value for e in elements if isinstance(e, ast.Constant) and e.value in METHODS]


def test_no_second_table_of_method_names():
    """Outside the registry, no dict/set/list/tuple literal lists two or more method names (a
    package's ``__all__`` of functions aside), and the engine names no method at all (a string
    equal to a method name there may only be a family or a rule, e.g. ``"cam"``)."""
    family_or_rule = {s.family for s in METHODS.values()} | {s.backward_rule for s in METHODS.values()}
    tables = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "registry.py":
            continue
        tree = ast.parse(path.read_text())
        exported = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Dict | ast.Set | ast.List | ast.Tuple) and id(node) not in exported
                    and len(_literal_names(node)) >= 2):
                tables.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {_literal_names(node)}")
        if path.name == "engine.py":
            named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in METHODS}
            assert named <= family_or_rule, f"engine.py names methods {sorted(named - family_or_rule)}"
    assert not tables, tables


def test_every_spec_field_is_documented():
    doc = inspect.getdoc(MethodSpec) or ""
    for field in dataclasses.fields(MethodSpec):
        assert f"{field.name}:" in doc, field.name

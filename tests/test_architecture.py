"""Checked rules of the ``studies`` app's arrangement (issue #15).

(a) No module of ``studies/`` outside ``studies/pipeline/gpu/`` imports torch or the ``explainers``
    engine when it loads (the web process stays torch-free); ``explainers.registry`` and
    ``explainers.metrics.directions`` are torch-free and allowed. Checked on the source (imports
    that run at load: not inside a function, not under ``if TYPE_CHECKING:``) and in a fresh
    interpreter that imports every module but the GPU ones and the management commands.
(b) ``studies/selectors/`` reads: none of its modules imports ``studies.services`` or
    ``studies.pipeline``, anywhere in the file.
(c) Nothing outside ``studies/designs/`` (and the migrations) branches on the study kind: no
    comparison of something called ``...kind`` with a design's name or a ``Study.Kind`` member, no
    ``Study.Kind.<member>`` in a condition, comparison, ``match`` case or dict key, no dict keyed by
    a design's name, no table indexed by ``<x>.kind``; in the templates, no ``{% if ... kind == ... %}``.
    ``Job.Kind`` is not a study kind, and ``kind=Study.Kind.TRUST`` as a call's keyword is data.
(d) Production code does not import ``studies.fixtures``: only ``studies/fixtures/`` itself and the
    ``demo``, ``build_worlds`` and ``simulate_crowd`` commands may (and tests, benchmarks, scripts).

Each rule's checker is a function of a source text, tested on small synthetic sources below, so a
checker that stops seeing violations fails its own test. A failing rule lists ``file:line: what``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"

TORCH_FREE_EXPLAINERS = {"explainers.registry", "explainers.metrics.directions"}
FIXTURE_USERS = {
    "studies/management/commands/demo.py",
    "studies/management/commands/build_worlds.py",
    "studies/management/commands/simulate_crowd.py",
}
#: production modules allowed one named fixture, imported inside the function that uses it: the
#: admin's staff-only "Pilot with simulated workers" action runs the simulated crowd
FIXTURE_LAZY_USES = {"studies/admin.py": {"studies.fixtures.simulation.pilot"}}
#: the study kinds the checker knows without asking the registry (the registry adds the rest)
KNOWN_KINDS = {"class_discrimination", "trust"}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _python_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def _design_names() -> set[str]:
    """Registered designs' names, plus the last word of each (``discrimination``: an alias the
    results code used for ``class_discrimination``)."""
    from studies.designs import designs

    names = KNOWN_KINDS | {design.name for design in designs()}
    return names | {name.rsplit("_", 1)[-1] for name in names if "_" in name}


def _kind_members() -> set[str]:
    """``Kind.<member>`` names of study kinds: ``Study.Kind``'s members and each design's name in capitals."""
    from studies.models import Study

    return set(Study.Kind.names) | {name.upper() for name in _design_names()}


# ---------------------------------------------------------------------------------------------- helpers


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith("TYPE_CHECKING")


def _imports(tree: ast.AST, *, at_load_only: bool) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every import (``from a import b`` yields ``a.b``; ``import_module("x")`` yields x).
    ``at_load_only``: skip imports inside functions and ``if TYPE_CHECKING:`` blocks."""

    def walk(node: ast.AST) -> Iterator[tuple[int, str]]:
        for child in ast.iter_child_nodes(node):
            if at_load_only and (isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                                 or _type_checking(child)):  # fmt: skip
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child.lineno, alias.name
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:
                    yield child.lineno, f"{child.module}.{alias.name}"
            elif _imported_by_name(child):
                yield child.lineno, child.args[0].value  # type: ignore[attr-defined]
            yield from walk(child)

    yield from walk(tree)


def _imported_by_name(node: ast.AST) -> bool:
    """``importlib.import_module("a.b")`` with a constant name."""
    return (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") and bool(node.args)
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))  # fmt: skip


def _one_a_line(entries: list[str] | set[str]) -> list[str]:
    """``path:line: what`` entries, the first of each line, in line order."""
    first: dict[int, str] = {}
    for entry in sorted(entries):
        first.setdefault(int(entry.split(":")[1]), entry)
    return [first[line] for line in sorted(first)]


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# ---------------------------------------------------------------------------------------------- (a)


def _load_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) or _type_checking(child):
            continue
        yield child
        yield from _load_time_nodes(child)


def torch_import_violations(source: str, path: str) -> list[str]:
    """Imports of torch or the explainers engine that run when the module loads (``from P import M``
    is judged by ``P.M``, so ``from explainers.metrics import directions`` passes)."""
    out = []
    tree = ast.parse(source)
    for node in _load_time_nodes(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _under(node.module, "torch") or _under(node.module, "torchvision"):
                modules = [node.module]
            else:
                modules = [f"{node.module}.{alias.name}" for alias in node.names]
        elif _imported_by_name(node):
            modules = [node.args[0].value]  # type: ignore[attr-defined]
        for module in modules:
            if _under(module, "torch") or _under(module, "torchvision"):
                out.append(f"{path}:{node.lineno}: imports {module} at load")
            elif _under(module, "explainers") and not any(_under(module, ok) for ok in TORCH_FREE_EXPLAINERS):
                out.append(f"{path}:{node.lineno}: imports {module} at load "
                           f"(allowed: {', '.join(sorted(TORCH_FREE_EXPLAINERS))})")  # fmt: skip
    return out


def _studies_modules() -> list[str]:
    """Every module of ``studies`` but the GPU ones and the management commands."""
    names = []
    for path in _python_files(STUDIES):
        rel = _rel(path)
        if rel.startswith(("studies/pipeline/gpu/", "studies/management/commands/")):
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_a_no_studies_module_imports_torch_or_the_engine_at_load_source() -> None:
    found = []
    for path in _python_files(STUDIES):
        if not _rel(path).startswith("studies/pipeline/gpu/"):
            found += torch_import_violations(path.read_text(), _rel(path))
    assert not found, "torch / explainers engine imported at load:\n" + "\n".join(found)


def test_a_importing_every_studies_module_leaves_torch_unloaded() -> None:
    modules = _studies_modules()
    code = (
        "import importlib, sys, django, os\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'xaistudy.settings')\n"
        "django.setup()\n"
        "culprit, failed = None, []\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "    if culprit is None and 'torch' in sys.modules:\n"
        "        culprit = name\n"
        "for line in failed:\n"
        "    print('IMPORT FAILED', line)\n"
        "print('TORCH LOADED BY', culprit) if culprit else print('torch-free')\n"
        "sys.exit(1 if culprit or failed else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert len(modules) > 50
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


# ---------------------------------------------------------------------------------------------- (b)


def selector_import_violations(source: str, path: str) -> list[str]:
    """Imports of ``studies.services`` or ``studies.pipeline`` anywhere in a selector module."""
    out = []
    for line, module in _imports(ast.parse(source), at_load_only=False):
        if _under(module, "studies.services") or _under(module, "studies.pipeline"):
            out.append(f"{path}:{line}: a selector imports {module}")
    return _one_a_line(out)


def test_b_selectors_import_no_service_and_no_pipeline() -> None:
    found = []
    for path in _python_files(STUDIES / "selectors"):
        found += selector_import_violations(path.read_text(), _rel(path))
    assert not found, "selectors must only read:\n" + "\n".join(found)


# ---------------------------------------------------------------------------------------------- (c)


def _mentions_kind(node: ast.AST) -> bool:
    """``kind``, ``study.kind``, ``results_kind``, ``view["kind"]``, ``data.get("kind")``; never a job's."""
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute):
        name = node.attr
        if "job" in ast.unparse(node.value).lower():
            return False
    elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        name = str(node.slice.value)
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
          and node.args and isinstance(node.args[0], ast.Constant)):  # fmt: skip
        name = str(node.args[0].value)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str" and node.args:
        return _mentions_kind(node.args[0])
    else:
        return False
    return name.lower().endswith("kind")


def _study_kind_member(node: ast.AST, members: set[str]) -> bool:
    """``Study.Kind.X`` (any member), ``<anything but Job>.Kind.X`` or ``Kind.X`` with X a study kind."""
    if not isinstance(node, ast.Attribute):
        return False
    owner = node.value
    if isinstance(owner, ast.Attribute) and owner.attr == "Kind":
        if isinstance(owner.value, ast.Name) and owner.value.id == "Job":
            return False
        return ast.unparse(owner.value).endswith("Study") or node.attr in members
    return isinstance(owner, ast.Name) and owner.id == "Kind" and node.attr in members


def _names_a_design(node: ast.AST, names: set[str], members: set[str]) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value in names
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_design(element, names, members) for element in node.elts)
    if isinstance(node, ast.Attribute) and node.attr == "value":
        return _study_kind_member(node.value, members)
    return _study_kind_member(node, members)


def kind_branch_violations(source: str, path: str, *, names: set[str] | None = None,
                           members: set[str] | None = None) -> list[str]:  # fmt: skip
    """Branches on the study kind in one Python source (see the module docstring, rule (c))."""
    names = _design_names() if names is None else names
    members = _kind_members() if members is None else members
    tree = ast.parse(source)
    out: set[str] = set()

    def report(node: ast.AST, what: str) -> None:
        out.add(f"{path}:{node.lineno}: {what}: {ast.unparse(node)[:100]}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_mentions_kind(side) for side in sides) and any(_names_a_design(s, names, members) for s in sides):
                report(node, "compares the study kind")
            elif any(_study_kind_member(side, members) for side in sides):
                report(node, "compares with a Study.Kind member")
        elif isinstance(node, ast.If | ast.IfExp | ast.While | ast.Assert):
            if any(_study_kind_member(sub, members) for sub in ast.walk(node.test)):
                report(node.test, "Study.Kind in a condition")
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                if key is not None and _names_a_design(key, names, members):
                    report(key, "a table keyed by study kind")
        elif isinstance(node, ast.match_case):
            for sub in ast.walk(node.pattern):
                if isinstance(sub, ast.MatchValue) and _names_a_design(sub.value, names, members):
                    report(sub, "a match case on the study kind")
        elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Attribute) and node.slice.attr == "kind"
              and "job" not in ast.unparse(node.slice.value).lower()):  # fmt: skip
            report(node, "a table indexed by the study kind")
    return _one_a_line(out)


_IF_TAG = re.compile(r"{%-?\s*(?:el)?if\b(?P<body>.*?)-?%}", re.S)
_KIND_TEST = re.compile(r"(?<![\w.])(?!job\.)[\w.]*kind\s*(?:==|!=|\bnot\s+in\b|\bin\b)|(?:==|!=)\s*(?!job\.)[\w.]*kind\b")


def template_kind_violations(text: str, path: str) -> list[str]:
    """``{% if ... kind == ... %}`` (or ``!=``, ``in``) tags in a template; a job's kind is allowed."""
    out = []
    for match in _IF_TAG.finditer(text):
        if _KIND_TEST.search(match.group("body")):
            line = text.count("\n", 0, match.start()) + 1
            out.append(f"{path}:{line}: a template branches on the kind: {match.group(0)[:100]}")
    return out


def _kind_branch_scope() -> Iterator[Path]:
    for path in _python_files(STUDIES):
        if not _rel(path).startswith(("studies/designs/", "studies/migrations/")):
            yield path


def test_c_no_study_kind_branch_outside_the_designs() -> None:
    names, members = _design_names(), _kind_members()
    found = []
    for path in _kind_branch_scope():
        found += kind_branch_violations(path.read_text(), _rel(path), names=names, members=members)
    assert not found, "branches on the study kind outside studies/designs/:\n" + "\n".join(found)


def test_c_no_study_kind_branch_in_templates() -> None:
    found = []
    for root in (ROOT / "templates", STUDIES / "templates"):
        for path in sorted(root.rglob("*.html")) if root.is_dir() else []:
            if "/designs/" not in path.as_posix():
                found += template_kind_violations(path.read_text(), _rel(path))
    assert not found, "templates branching on the study kind:\n" + "\n".join(found)


# ---------------------------------------------------------------------------------------------- (d)


def fixture_import_violations(source: str, path: str) -> list[str]:
    """Imports of ``studies.fixtures`` (anywhere in the file, ``import_module`` strings included)."""
    out = []
    tree = ast.parse(source)
    at_load = [m for _, m in _imports(tree, at_load_only=True)]
    allowed = [a for a in FIXTURE_LAZY_USES.get(path, set()) if not any(_under(m, a) for m in at_load)]
    for line, module in _imports(tree, at_load_only=False):
        if _under(module, "studies.fixtures") and not any(_under(module, a) for a in allowed):
            out.append(f"{path}:{line}: production code imports {module}")
    return _one_a_line(out)


def test_d_production_code_does_not_import_the_fixtures() -> None:
    found = []
    for root in (STUDIES, ROOT / "xaistudy", ROOT / "explainers"):
        for path in _python_files(root):
            rel = _rel(path)
            if rel.startswith("studies/fixtures/") or rel in FIXTURE_USERS:
                continue
            found += fixture_import_violations(path.read_text(), rel)
    assert not found, "only the fixtures, demo/build_worlds/simulate_crowd and tests import studies.fixtures:\n" + \
        "\n".join(found)  # fmt: skip


# ---------------------------------------------------------------------------------------------- the checkers, checked

NAMES = {"class_discrimination", "trust", "discrimination"}
MEMBERS = {"CLASS_DISCRIMINATION", "TRUST"}


def _kind(source: str) -> list[str]:
    return kind_branch_violations(source, "x.py", names=NAMES, members=MEMBERS)


@pytest.mark.parametrize("source", [
    "import torch\n",
    "import torch.nn as nn\n",
    "from torch import nn\n",
    "from explainers import explain\n",
    "from explainers.zoo import load_model\n",
    "import explainers.methods\n",
    "try:\n    import torch\nexcept ImportError:\n    torch = None\n",
    "class A:\n    import torch\n",
    "import importlib\nT = importlib.import_module('torch')\n",
])  # fmt: skip
def test_checker_a_sees_load_time_engine_imports(source: str) -> None:
    found = torch_import_violations(source, "studies/x.py")
    assert found, source
    assert found[0].startswith("studies/x.py:"), found


@pytest.mark.parametrize("source", [
    "from explainers.registry import METHODS\n",
    "import explainers.registry\n",
    "from explainers.metrics.directions import HIGHER_IS_BETTER\n",
    "from explainers.metrics import directions\n",
    "def f():\n    import torch\n    from explainers import explain\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
])  # fmt: skip
def test_checker_a_allows_the_torch_free_modules_and_lazy_imports(source: str) -> None:
    assert torch_import_violations(source, "studies/x.py") == []


def test_checker_b_sees_service_and_pipeline_imports_even_inside_functions() -> None:
    source = ("from studies.models import Study\n"
              "from studies.services.allocation import allocate\n"
              "def f():\n    from studies.pipeline import plan\n"
              "def g():\n    import studies.services.exports\n")  # fmt: skip
    found = selector_import_violations(source, "studies/selectors/x.py")
    assert [entry.split(":")[1] for entry in found] == ["2", "4", "6"], found
    assert selector_import_violations("from studies.lib.rows import q\nfrom studies import models\n", "s.py") == []


@pytest.mark.parametrize("source", [
    "if study.kind == Study.Kind.TRUST:\n    pass\n",
    "if study.kind == 'trust':\n    pass\n",
    "x = 1 if kind != 'class_discrimination' else 2\n",
    "ok = results.kind == 'discrimination'\n",
    "ok = self.study.kind in (Study.Kind.TRUST, Study.Kind.CLASS_DISCRIMINATION)\n",
    "ok = view['kind'] == 'trust'\n",
    "ok = data.get('kind') == 'trust'\n",
    "ok = 'trust' == study_kind\n",
    "if Kind.TRUST == k:\n    pass\n",
    "if something(Study.Kind.CLASS_DISCRIMINATION):\n    pass\n",
    "QUESTIONS = {Study.Kind.TRUST: 'a', Study.Kind.CLASS_DISCRIMINATION: 'b'}\n",
    "QUESTIONS = {'trust': 'a'}\n",
    "q = QUESTIONS[study.kind]\n",
    "match study.kind:\n    case 'trust':\n        pass\n",
    "match study.kind:\n    case Study.Kind.TRUST:\n        pass\n",
    "ok = str(study.kind) == Study.Kind.TRUST.value\n",
])  # fmt: skip
def test_checker_c_sees_kind_branches(source: str) -> None:
    found = _kind(source)
    assert found, source
    assert found[0].startswith("x.py:"), found


@pytest.mark.parametrize("source", [
    "Study.objects.create(name='s', kind=Study.Kind.TRUST)\n",
    "def make(kind: str = Study.Kind.CLASS_DISCRIMINATION):\n    return kind\n",
    "if job.kind != Job.Kind.EVALUATE:\n    pass\n",
    "jobs = study.jobs.filter(kind=Job.Kind.PREPARE)\n",
    "x = [COLOUR_KEYS[kind] for kind in ('overlay', 'gradient')]\n",
    "if spec['kind'] == 'overlay':\n    pass\n",
    "design = design_for(study)\nif design.sides == ('main',):\n    pass\n",
    "LABELS = {'prepare': 1}\nx = LABELS[job.kind]\n",
])  # fmt: skip
def test_checker_c_allows_data_and_other_kinds(source: str) -> None:
    assert _kind(source) == []


def test_checker_c_templates() -> None:
    text = ('<p>{{ study.kind }}</p>\n{% if study.kind == "trust" %}a{% elif kind != "discrimination" %}b{% endif %}\n'
            '{% if job.kind == "prepare" %}c{% endif %}{% if "trust" == kind %}d{% endif %}\n'
            '{% for kind, url in exports %}{{ kind }}{% endfor %}{% if kind in kinds %}e{% endif %}\n')  # fmt: skip
    found = template_kind_violations(text, "t.html")
    assert [entry.split(":")[1] for entry in found] == ["2", "2", "3", "4"], found


def test_checker_d_sees_fixture_imports() -> None:
    source = ("from studies.fixtures.builders import make_worker_study\n"
              "def f():\n    from studies.fixtures import worlds\n"
              "import importlib\nm = importlib.import_module('studies.fixtures.simulation.crowd')\n"
              "from studies import fixtures\n")  # fmt: skip
    found = fixture_import_violations(source, "studies/web/x.py")
    assert [entry.split(":")[1] for entry in found] == ["1", "3", "5", "6"], found
    assert fixture_import_violations("from studies.services import exports\n", "x.py") == []

"""The web process reads the method registry without importing torch (issue #13)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_registry_import_does_not_import_torch_and_explain_still_resolves():
    code = (
        "import sys, explainers, explainers.registry as r;"
        "assert 'torch' not in sys.modules, 'registry pulled in torch';"
        "assert 'gradcam' in r.METHODS;"
        "from explainers import explain;"
        "assert 'torch' in sys.modules and callable(explain)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_registry_and_metric_directions_import_without_torch():
    """The web process reads the registry and the metrics' directions (issue #15): neither loads
    torch, and the directions are the very dict ``explainers.metrics`` and its evaluate module use."""
    code = (
        "import sys, explainers.registry as r, explainers.metrics.directions as d;"
        "from explainers.metrics.directions import HIGHER_IS_BETTER, SANITY_SIMILARITY_HIGHER_IS_BETTER;"
        "assert 'torch' not in sys.modules, 'registry or directions pulled in torch';"
        "assert r.METHODS['gradcam'].family == 'cam' and HIGHER_IS_BETTER['insertion_auc'];"
        "assert SANITY_SIMILARITY_HIGHER_IS_BETTER is False;"
        "import explainers.metrics as m;"
        "assert 'torch' not in sys.modules, 'import explainers.metrics pulled in torch';"
        "from explainers.metrics import evaluate_methods;"
        "import explainers.metrics.evaluate as e;"
        "assert 'torch' in sys.modules and callable(evaluate_methods);"
        "assert m.HIGHER_IS_BETTER is e.HIGHER_IS_BETTER is d.HIGHER_IS_BETTER"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

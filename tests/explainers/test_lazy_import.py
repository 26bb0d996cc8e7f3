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

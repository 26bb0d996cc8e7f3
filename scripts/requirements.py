"""Print the pinned requirements of pyproject.toml (runtime + test), one per line, for pip -r."""

import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
print("\n".join([*project["dependencies"], *project["optional-dependencies"]["test"]]))

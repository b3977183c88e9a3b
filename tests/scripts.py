"""Load a script of the repository (``bench/*.py``, ``scripts/*.py``) as a module, for its tests."""

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relpath: str) -> ModuleType:
    """The script at ``REPO / relpath``, executed as a fresh module (its ``__main__`` block does not run)."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

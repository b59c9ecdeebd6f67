"""A function's own modules, imported into a tool the way its Lambda finds them.

Tools depend on the project, never the reverse: a module that only one function needs (e.g. the
reconcile function's ``reconcile.report``) lives in that function, and a tool that needs it too
(``smartpay report``, the demo) imports it from the function's code folder with the layer beside it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from smartpay_tools import PROJECT_ROOT


def on_path(*folders: Path) -> None:
    """Put these code folders first on ``sys.path`` (once each)."""
    for folder in reversed(folders):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def import_module(function: str, module: str) -> ModuleType:
    """``import_module("reconcile", "reconcile.report")``: ``functions/<function>`` and the layer on the path."""
    on_path(PROJECT_ROOT / "functions" / function, PROJECT_ROOT / "layers" / "core")
    return importlib.import_module(module)

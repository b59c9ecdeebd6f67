"""Find python3.12, the Lambda runtime's interpreter (``sam build``, the built-function tests and the
cold-start benchmark run under it): ``$PY312`` (the interpreter or its folder), else a working
``python3.12`` on ``PATH``, else pyenv's newest 3.12. ``python -m smartpay_tools.local.lambda_python``
prints its path, or one line saying how to get it and exits 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HOW_TO_GET_IT = ("python3.12 (the Lambda runtime) not found: set PY312=/path/to/python3.12 (or its folder), "
                 "put python3.12 on PATH, or install it (pyenv install 3.12, or apt-get install python3.12)")


def _real(candidate: str | Path) -> Path | None:
    """The interpreter ``candidate`` runs, if it is a working 3.12 (a pyenv shim may refuse)."""
    try:
        out = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[:2] == (3, 12), sys.executable)"],
                             capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    ok, _, executable = out.stdout.strip().partition(" ")
    return Path(executable) if out.returncode == 0 and ok == "True" else None


def find() -> Path | None:
    configured = os.environ.get("PY312")
    if configured:
        path = Path(configured)
        return _real(path / "python3.12" if path.is_dir() else path)
    on_path = shutil.which("python3.12")
    if on_path and (found := _real(on_path)):
        return found
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() if shutil.which(
        "pyenv") else ""
    for candidate in sorted(Path(root or Path.home() / ".pyenv").glob("versions/3.12*/bin/python3.12"), reverse=True):
        if found := _real(candidate):
            return found
    return None


def main() -> int:
    found = find()
    if found is None:
        print(HOW_TO_GET_IT, file=sys.stderr)
        return 2
    print(found)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

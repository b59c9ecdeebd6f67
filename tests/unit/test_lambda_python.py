"""python3.12 (the Lambda runtime) is found from PY312, then PATH, then pyenv; when absent, one line
says how to get it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smartpay_tools.local import lambda_python


def _fake(folder: Path, version_ok: bool = True) -> Path:
    """A stand-in interpreter that answers the version probe like python3.12 (or like another version)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "python3.12"
    script.write_text(f"#!/bin/sh\necho {version_ok} {folder}/real-python3.12\n")
    script.chmod(0o755)
    return script


def test_py312_wins_as_a_folder_or_an_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake(tmp_path / "configured")
    monkeypatch.setenv("PATH", str(_fake(tmp_path / "on_path").parent))
    for configured in (fake.parent, fake):
        monkeypatch.setenv("PY312", str(configured))
        assert lambda_python.find() == tmp_path / "configured" / "real-python3.12"


def test_path_is_used_when_py312_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PY312", raising=False)
    monkeypatch.setenv("PATH", str(_fake(tmp_path / "on_path").parent))
    assert lambda_python.find() == tmp_path / "on_path" / "real-python3.12"


def test_a_wrong_version_is_not_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PY312", str(_fake(tmp_path / "old", version_ok=False)))
    assert lambda_python.find() is None


def test_absent_fails_with_one_line_saying_how_to_get_it(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "smartpay_tools.local.lambda_python"], capture_output=True, text=True,
                         env={"PY312": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == lambda_python.HOW_TO_GET_IT and len(out.stderr.strip().splitlines()) == 1

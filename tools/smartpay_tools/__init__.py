"""Operator tools and the Docker-free local stack for Ketchup SmartPay.

Everything here depends on the project (template.yaml, the functions, the core layer);
nothing in the project depends on this package.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

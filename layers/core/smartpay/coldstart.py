"""A function's cold start without the cyclic garbage collector, then its modules frozen.

While a handler's modules load (Powertools, pydantic, psycopg: ~70,000 objects that live as long
as the container), the collector runs full passes over them that find nothing to free (333
unreachable objects after a whole init). :func:`begin` turns the collector off for the import;
:func:`end` moves everything loaded into the permanent generation (:func:`gc.freeze`, CPython's
own recipe for long-lived startup state) and turns it on again, so later collections never walk
those objects either. Measured with python3.12 on the ``sam build`` output, same code with and
without it: 13-16 ms of the API functions' ~230 ms init CPU (6 %), 6-8 ms of migrate's, 3 ms of
the authorizer's (docs/performance.md#cold-start-of-every-function).

Only the process that the runtime started for this handler (``_HANDLER``, set by Lambda and by
the local stack) is affected: tests and tools that import a function's modules keep the
collector as it is.

    # functions/<name>/<name>/__init__.py        # functions/<name>/<name>/handler.py, last line
    coldstart.begin(__name__)                     coldstart.end()
"""

from __future__ import annotations

import gc
import os

_paused = False


def begin(package: str) -> None:
    """Pause the collector if this process runs ``package``'s handler (``_HANDLER``) and no one
    paused it yet. Called first thing by a function's package, before its handler's imports."""
    global _paused
    if os.environ.get("_HANDLER", "").startswith(f"{package}.") and gc.isenabled() and not _paused:
        gc.disable()
        _paused = True


def end() -> None:
    """Freeze what the init loaded and turn the collector back on (only if :func:`begin` paused it)."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False

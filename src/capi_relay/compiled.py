"""The compiled core: which modules `sam build` compiles to C (src/build_core.py, mypyc) and which kind this process
loaded. Each of them is also shipped as its ``.py`` source: Python imports the C extension when there is one for its
platform (the artifact's are for Lambda's arm64 python3.13) and the source otherwise, with the same behaviour (the
unit suite runs against both: ``make unit`` and ``make unit-compiled``)."""

from __future__ import annotations

import importlib
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # capi_relay/__init__ imports this module: it imports only what the interpreter already has
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

# The per-record and per-event path (docs/performance.md): reading the envelope, the relay's loop over records,
# normalization and hashing, event validation, the ledger's bookkeeping and the chunker. The delivery engine, the
# HTTP client, the letters and the AWS clients wait on I/O or run once per invocation: they gain nothing compiled.
COMPILED_MODULES = (
    "capi_relay.ingest.envelope",
    "capi_relay.relay",
    "capi_relay.prepare.rules",
    "capi_relay.prepare.normalize",
    "capi_relay.prepare.events",
    "capi_relay.fate.ledger",
    "capi_relay.deliver.chunking",
)


def core(modules: Sequence[str] = COMPILED_MODULES) -> str:
    """``compiled`` when every module of ``modules`` was loaded from a C extension, ``pure`` when none was,
    ``mixed`` otherwise (a build that left some out: a bug)."""
    compiled = sum(
        isinstance(getattr(importlib.import_module(name), "__loader__", None), ExtensionFileLoader) for name in modules
    )
    return "compiled" if compiled == len(modules) else "pure" if compiled == 0 else "mixed"


# ------------------------------------------------------------------ a core that cannot load never stops the function
SHARED_LIBRARY = "capi_relay_core__mypyc"  # beside the capi_relay package (src/build_core.py's GROUP)
_fallback_reason: str | None = None


def guard() -> None:
    """Run once when the package is imported (capi_relay/__init__.py). When the core's shared library is there for
    this interpreter but cannot load (a broken or foreign build: Python would raise ImportError for every core
    module, and the function would fail every cold start), the core's modules are imported from their ``.py``
    sources instead and :func:`fallback_reason` says why (the handler's cold-start warning carries it). Where there is
    no such file (the pure modules, or another platform's core) it costs one ``stat``."""
    global _fallback_reason  # noqa: PLW0603 -- once per process
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not EXTENSION_SUFFIXES or not os.path.exists(
        os.path.join(package_parent, SHARED_LIBRARY + EXTENSION_SUFFIXES[0])
    ):
        return
    try:
        importlib.import_module(SHARED_LIBRARY)
    except (ImportError, OSError) as exc:
        _fallback_reason = f"{type(exc).__name__}: {exc}"[:500]
        sys.meta_path.insert(0, _SourcesFirst())


def fallback_reason() -> str | None:
    """Why the compiled core present in the artifact was not loaded (None: it was, or there is none)."""
    return _fallback_reason


class _SourcesFirst:
    """A meta path finder (no importlib.abc base: importing it costs ~30 ms of cold start) that finds each core
    module's ``.py`` source (and its ``.pyc``) before the extension beside it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in COMPILED_MODULES or not path:
            return None
        for entry in path:
            source = os.path.join(entry, fullname.rpartition(".")[2] + ".py")
            if os.path.isfile(source):
                from importlib.util import spec_from_file_location  # noqa: PLC0415 -- only after a failed core

                return spec_from_file_location(fullname, source)
        return None

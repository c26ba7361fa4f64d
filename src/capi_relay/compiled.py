"""The compiled core: which modules `sam build` compiles to C (src/build_core.py, mypyc) and which kind this process
loaded. Each of them is also shipped as its ``.py`` source: Python imports the C extension when there is one for its
platform (the artifact's are for Lambda's arm64 python3.13) and the source otherwise, with the same behaviour (the
unit suite runs against both: ``make unit`` and ``make unit-compiled``)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib.machinery import ExtensionFileLoader

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

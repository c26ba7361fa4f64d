"""The compiled core's switch: which kind of each module this process loaded (capi_relay.compiled)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from capi_relay import compiled

SRC = Path(__file__).resolve().parents[2] / "src"


def test_this_run_loaded_the_core_it_was_asked_for() -> None:
    # `make unit` runs the sources ("pure"); `make unit-compiled` the C extensions built by `make core`
    assert compiled.core() == os.environ.get("CAPI_RELAY_EXPECT_CORE", "pure")


def test_a_core_with_some_modules_compiled_and_some_not_is_mixed() -> None:
    # _json and orjson's orjson are C extensions, json.decoder is not (the check reads each module's loader)
    assert compiled.core(("_json", "orjson.orjson")) == "compiled"
    assert compiled.core(("json.decoder",)) == "pure"
    assert compiled.core(("_json", "json.decoder")) == "mixed"


def test_the_core_holds_the_per_event_path_and_nothing_that_waits_on_io() -> None:
    modules = set(compiled.COMPILED_MODULES)
    # the modules every event passes through (a core without one of them would leave its cost in Python) ...
    assert {"capi_relay.prepare.normalize", "capi_relay.prepare.events", "capi_relay.relay"} <= modules
    # ... and none that waits on I/O or that the operator tools alone import (no gain; the tools are not shipped)
    waits = {"capi_relay.deliver.engine", "capi_relay.deliver.client", "capi_relay.aws.sqs", "capi_relay.aws.secrets"}
    assert not modules & waits
    assert not any(name.startswith("capi_relay.tools") for name in modules)
    for name in modules:  # each ships as its source too: the fallback
        assert (SRC / Path(*name.split("."))).with_suffix(".py").is_file()


def test_each_compiled_module_names_the_file_python_loaded() -> None:
    # mypyc writes an extension suffix into the C: src/build_core.py gives it the target's (on Lambda, aarch64's)
    import importlib
    import importlib.machinery

    for name in compiled.COMPILED_MODULES:
        module = importlib.import_module(name)
        loaded = module.__spec__.origin if module.__spec__ else None
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0] if compiled.core() == "compiled" else ".py"
        assert module.__file__ is not None
        assert module.__file__.endswith(suffix)
        assert loaded is not None
        assert loaded.endswith(suffix)


def test_a_core_that_cannot_load_falls_back_to_the_sources(tmp_path: Path) -> None:
    # Given a package whose compiled core is there for this interpreter but broken (garbage where the shared
    # library and a module's shim should be): without the guard every import of a core module raises ImportError
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    shutil.copytree(SRC / "capi_relay", tmp_path / "capi_relay", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (tmp_path / f"{compiled.SHARED_LIBRARY}{suffix}").write_bytes(b"\x7fELF not a library")
    (tmp_path / "capi_relay" / "prepare" / f"normalize{suffix}").write_bytes(b"\x7fELF not a library")
    code = (
        "import json, capi_relay.prepare.normalize as n, capi_relay.relay\n"
        "from capi_relay.compiled import core, fallback_reason\n"
        "print(json.dumps([n.__file__, core(), fallback_reason()]))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            check=False, cwd=tmp_path)  # fmt: skip
    # Then the core's modules come from their sources and the reason is kept for the cold-start warning
    assert result.returncode == 0, result.stderr[-2000:]
    file, kind, reason = json.loads(result.stdout)
    assert file == str(tmp_path / "capi_relay" / "prepare" / "normalize.py")
    assert kind == "pure"
    assert reason.startswith("ImportError")


def test_no_core_file_for_this_interpreter_means_no_fallback_and_no_reason() -> None:
    # the .py run (make unit) and the compiled run (make unit-compiled) both load what they find, without the guard
    assert compiled.fallback_reason() is None

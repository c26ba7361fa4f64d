"""The compiled core's switch: which kind of each module this process loaded (capi_relay.compiled)."""

from __future__ import annotations

import os

from capi_relay import compiled


def test_this_run_loaded_the_core_it_was_asked_for() -> None:
    # `make unit` runs the sources ("pure"); `make unit-compiled` the C extensions built by `make core`
    assert compiled.core() == os.environ.get("CAPI_RELAY_EXPECT_CORE", "pure")


def test_a_core_with_some_modules_compiled_and_some_not_is_mixed() -> None:
    # _json and orjson's orjson are C extensions, json.decoder is not (the check reads each module's loader)
    assert compiled.core(("_json", "orjson.orjson")) == "compiled"
    assert compiled.core(("json.decoder",)) == "pure"
    assert compiled.core(("_json", "json.decoder")) == "mixed"


def test_the_core_holds_the_hot_path_and_nothing_that_waits_on_io() -> None:
    assert set(compiled.COMPILED_MODULES) == {
        "capi_relay.ingest.envelope", "capi_relay.relay", "capi_relay.prepare.rules", "capi_relay.prepare.normalize",
        "capi_relay.prepare.events", "capi_relay.fate.ledger", "capi_relay.deliver.chunking",
    }  # fmt: skip


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

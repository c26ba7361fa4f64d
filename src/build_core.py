"""Build the compiled core: the modules of ``capi_relay.compiled.COMPILED_MODULES`` compiled to C extensions.

src/Makefile runs it in `sam build` for Lambda's arm64 python3.13 (``--target aarch64``); ``make core`` runs it for
this machine (``--target native``) so that the tests and benchmarks run the same C. Steps:

1. mypyc turns the modules' type-annotated source (the same ``.py`` files, which stay in the artifact as the
   pure-Python fallback) into C: one shared library ``capi_relay_core__mypyc`` and a small shim extension per
   module.
2. zig's C compiler (the PyPI package ``ziglang``) compiles that C for the target's CPU and glibc: aarch64 and glibc
   2.34, the C library of Amazon Linux 2023 that Lambda's python3.13 runs on, so it loads there whatever this
   machine is. The CPython headers are this interpreter's: cp313's ABI (pyconfig.h's sizes and alignments) is the
   same on every 64-bit Linux, so it must be a Linux, non-debug, GIL build of 3.13 (checked).
3. The results are checked: an aarch64 ELF shared object for each file of ``--target aarch64``, an import of each
   module (loaded from its extension) for ``--target native``.

``--require`` makes a missing tool (mypyc, setuptools, ziglang) an error; without it the build warns and leaves the
pure-Python modules (the artifact works, ~1.4x slower per event: docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

SRC_DIR = Path(__file__).resolve().parent
GROUP = "capi_relay_core"  # the shared library: capi_relay_core__mypyc.<suffix>, beside the capi_relay package
# target -> (zig's target triple with the glibc version, the extension suffix Python looks for on that platform)
TARGETS = {
    "aarch64": ("aarch64-linux-gnu.2.34", ".cpython-313-aarch64-linux-gnu.so"),
    "x86_64": ("x86_64-linux-gnu.2.34", ".cpython-313-x86_64-linux-gnu.so"),
}
_EM_AARCH64 = 183  # ELF e_machine
_EM_X86_64 = 62
COMPILE_TIMEOUT_S = 600


class CoreBuildError(Exception):
    """The core cannot be built; the message says what is missing."""


def compiled_modules() -> tuple[str, ...]:
    sys.path.insert(0, str(SRC_DIR))
    try:
        from capi_relay.compiled import COMPILED_MODULES  # noqa: PLC0415 -- from this source tree, not an installed one
    finally:
        sys.path.remove(str(SRC_DIR))
    return COMPILED_MODULES


def check_interpreter() -> None:
    if sys.version_info[:2] != (3, 13) or not sys.platform.startswith("linux"):
        raise CoreBuildError(f"needs CPython 3.13 on Linux for the cp313 headers, not {sys.version.split()[0]} "
                             f"on {sys.platform}")  # fmt: skip
    if sysconfig.get_config_var("Py_GIL_DISABLED") or sysconfig.get_config_var("Py_DEBUG"):
        raise CoreBuildError("needs a default (GIL, non-debug) build of CPython 3.13: this one has another ABI")
    if sysconfig.get_config_var("SIZEOF_VOID_P") != 8:
        raise CoreBuildError("needs a 64-bit CPython")


def zig_command() -> list[str]:
    if importlib.util.find_spec("ziglang") is None:
        raise CoreBuildError("the `ziglang` package (zig's C compiler) is not installed")
    return [sys.executable, "-m", "ziglang"]


def generate_c(modules: Sequence[str], work: Path, suffix: str) -> list[Any]:
    """mypyc: the C sources of ``modules`` under ``work``; returns setuptools Extensions (name, sources, flags).

    mypyc writes an extension suffix into the C (each module's ``__file__`` is the shared library's directory +
    module name + suffix) and takes it from ``importlib.machinery.EXTENSION_SUFFIXES`` when it is imported: the
    target's suffix is put first while it is, so that ``__file__`` names the file the target loaded."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    suffixes.insert(0, suffix)
    try:
        importlib.import_module("setuptools")  # first: mypyc's build helpers take setuptools' Extension once imported
        from mypyc.build import mypycify  # noqa: PLC0415 -- a build tool, imported when used
        from mypyc.common import EXT_SUFFIX  # noqa: PLC0415
    except ImportError as exc:
        raise CoreBuildError(f"mypyc cannot run here ({exc}): install mypy and setuptools") from None
    finally:
        suffixes.remove(suffix)
    if suffix != EXT_SUFFIX:
        raise CoreBuildError(f"mypyc was imported before the target's suffix {suffix} could be set: run build_core.py "
                             "in a fresh interpreter")  # fmt: skip
    paths = [name.replace(".", "/") + ".py" for name in modules]
    cwd = Path.cwd()
    os.chdir(SRC_DIR)  # mypyc names each module by its path from here
    try:
        extensions: list[Any] = mypycify(paths, opt_level="3", debug_level="0", group_name=GROUP,
                                         target_dir=str(work))  # fmt: skip
    except SystemExit as exc:  # mypyc exits on a type error in the modules
        raise CoreBuildError(f"mypyc failed ({exc.code}): see its messages above") from None
    finally:
        os.chdir(cwd)
    return extensions


def compile_extension(zig: list[str], triple: str, extension: Any, out: Path, work: Path) -> None:
    """One extension: each C file compiled, then linked into a stripped shared object at ``out``."""
    include = [f"-I{path}" for path in [*extension.include_dirs, sysconfig.get_paths()["include"]]]
    flags = ["-target", triple, "-fPIC", "-DNDEBUG", *extension.extra_compile_args]
    objects: list[str] = []
    for index, source in enumerate(extension.sources):
        obj = work / f"{extension.name}.{index}.o"
        run([*zig, "cc", *flags, *include, "-c", str(SRC_DIR / source), "-o", str(obj)])
        objects.append(str(obj))
    out.parent.mkdir(parents=True, exist_ok=True)
    run([*zig, "cc", "-target", triple, "-shared", "-s", *objects, "-o", str(out)])


def run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)  # noqa: S603 -- zig with our paths
    if result.returncode != 0:
        raise CoreBuildError(f"zig cc ... {' '.join(cmd[-4:])} failed:\n{result.stderr[-4000:]}")


def output_path(root: Path, name: str, suffix: str) -> Path:
    return root.joinpath(*name.split(".")).with_name(name.rsplit(".", maxsplit=1)[-1] + suffix)


def check_outputs(paths: Sequence[Path], machine: int) -> None:
    for path in paths:
        header = path.read_bytes()[:20]
        if header[:4] != b"\x7fELF" or header[4] != 2 or int.from_bytes(header[18:20], "little") != machine:
            raise CoreBuildError(f"{path} is not a 64-bit ELF shared object for machine {machine}")


def check_imports(root: Path, modules: Sequence[str]) -> None:
    """Import each module from ``root`` in a fresh interpreter: loaded from its extension, not the source."""
    code = "import sys; from capi_relay.compiled import core; sys.exit(core() != 'compiled')"
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,  # noqa: S603
                            check=False)  # fmt: skip
    if result.returncode != 0:
        raise CoreBuildError(f"the built core does not load ({', '.join(modules)}):\n{result.stderr[-4000:]}")


def build(root: Path, target: str) -> list[Path]:
    """Compile the core into ``root`` (which holds the capi_relay package), or copy it from the cache when the same
    sources, tools and target built it before. Returns the files written."""
    check_interpreter()
    zig = zig_command()
    arch = os.uname().machine if target == "native" else target
    if arch not in TARGETS:
        raise CoreBuildError(f"no target for {arch}")
    if not (root / "capi_relay").is_dir():
        raise CoreBuildError(f"{root} holds no capi_relay package")
    for stale in root.glob(f"{GROUP}__mypyc.*.so"):
        stale.unlink()
    cached = cache_dir() / cache_key(arch)
    if cached.is_dir():
        os.utime(cached)  # the most recently used entries are the ones kept
    else:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # staged beside the entry (the same file system): renamed into place whole, never read half-written
        with tempfile.TemporaryDirectory(prefix="capi-relay-core-") as work, \
                tempfile.TemporaryDirectory(prefix=".stage-", dir=cached.parent) as stage:  # fmt: skip
            compile_core(zig, arch, Path(stage) / "core", Path(work))
            store(Path(stage) / "core", cached)
    outputs = [root / path.relative_to(cached) for path in sorted(cached.rglob("*.so"))]
    if len(outputs) != len(compiled_modules()) + 1:  # a shim per module and the shared library
        raise CoreBuildError(f"{cached} holds {len(outputs)} extensions, not one per core module and the library")
    try:
        for path in outputs:
            shutil.copyfile(cached / path.relative_to(root), path)
        check_outputs(outputs, _EM_AARCH64 if arch == "aarch64" else _EM_X86_64)
        if target == "native":
            check_imports(root, compiled_modules())
    except BaseException:
        for path in outputs:  # all or nothing: a core with some modules missing is never left behind
            path.unlink(missing_ok=True)
        raise
    return outputs


def compile_core(zig: list[str], arch: str, stage: Path, work: Path) -> None:
    """mypyc's C for the core's modules, compiled for ``arch`` into ``stage`` (laid out as the package root)."""
    triple, suffix = TARGETS[arch]
    extensions = generate_c(compiled_modules(), work / "c", suffix)
    outputs = [output_path(stage, ext.name.removesuffix(".__init__"), suffix) for ext in extensions]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for done in [pool.submit(compile_extension, zig, triple, ext, out, work)
                     for ext, out in zip(extensions, outputs, strict=True)]:  # fmt: skip
            done.result()
    check_outputs(outputs, _EM_AARCH64 if arch == "aarch64" else _EM_X86_64)


# The cache: one directory per key, the most recent CACHE_ENTRIES kept (each ~0.9 MB: a few MB in all).
CACHE_ENTRIES = 4
_ENTRY_PREFIXES = tuple(f"{arch}-" for arch in TARGETS)  # cache_key's names


def cache_dir() -> Path:
    configured = os.environ.get("CAPI_RELAY_CORE_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "capi-relay" / "core"
    return Path(configured) if configured else base


def cache_key(arch: str) -> str:
    """What the C depends on: every source of the package (mypyc reads the types of the modules they import), this
    script, the tools' versions, the interpreter (its headers) and the target."""
    digest = hashlib.sha256()
    for part in (arch, sys.version, version("mypy"), version("ziglang"), version("setuptools")):
        digest.update(part.encode() + b"\0")
    for path in [Path(__file__).resolve(), *sorted((SRC_DIR / "capi_relay").rglob("*.py"))]:
        digest.update(str(path.relative_to(SRC_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{arch}-{digest.hexdigest()[:24]}"


def store(stage: Path, cached: Path) -> None:
    """Rename a finished build into the cache and drop the oldest entries beyond CACHE_ENTRIES."""
    with contextlib.suppress(OSError):  # another build stored the same key first: the same files
        stage.rename(cached)
    entries = [p for p in cached.parent.iterdir() if p.name.startswith(_ENTRY_PREFIXES) and p != cached]
    entries.sort(key=lambda p: p.stat().st_mtime)  # (not the .stage- directories of builds under way)
    for old in entries[: max(0, len(entries) - (CACHE_ENTRIES - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the directory that holds the capi_relay package")
    parser.add_argument("--target", choices=["aarch64", "native"], required=True)
    parser.add_argument("--require", action="store_true", help="fail when the core cannot be built")
    args = parser.parse_args(argv)
    try:
        outputs = build(args.out.resolve(), args.target)
    except (CoreBuildError, OSError, subprocess.SubprocessError) as exc:  # a compiler timeout, a full disk ...
        if args.require:
            print(f"build_core: {exc}", file=sys.stderr)
            return 1
        print(f"build_core: WARNING: no compiled core, the pure-Python modules ship ({exc})", file=sys.stderr)
        return 0
    size = sum(path.stat().st_size for path in outputs)
    print(f"build_core: {len(outputs)} extensions for {args.target}, {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

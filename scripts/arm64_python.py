"""Run a Python command in an emulated aarch64 CPython 3.13 (Debian trixie's, glibc) under qemu user mode.

    python scripts/arm64_python.py [--cache DIR] [--path DIR ...] [--qemu FILE] [--refresh] -- <python args...>
    python scripts/arm64_python.py --setup        # download only; prints what is where

The Lambda artifact targets the python3.13 arm64 runtime; this runs its aarch64 code (orjson's extension, a
mypyc-compiled core) on an x86_64 machine. Everything comes from package registries:

* qemu: Debian's ``qemu-user-static`` for this machine (``apt-get download`` + ``dpkg-deb``; only
  ``qemu-aarch64-static`` is kept), else ``qemu-aarch64-static`` / ``qemu-aarch64`` on PATH, or ``--qemu``;
* CPython: ``python3.13-minimal``, ``libpython3.13-minimal``, ``libpython3.13-stdlib`` and their Depends /
  Pre-Depends closure from Debian trixie's arm64 ``Packages`` index on deb.debian.org (HTTPS). The index is
  reached through ``InRelease`` (its signature checked with ``gpgv`` when the Debian archive keyring is installed),
  whose SHA256 checks ``Packages.xz``, whose SHA256 checks every ``.deb``. File names are read from the index, never
  hard-coded: trixie's point releases remove old files.

The cache (``--cache``, else ``$CAPI_RELAY_ARM64_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/capi-relay/
arm64-python3.13``) holds ``sysroot/`` (~78 MB, its standard library byte-compiled once by the emulated
interpreter), ``qemu/`` (~13 MB) and ``sysroot.json`` (the packages, versions, hashes). A second run reuses it
without the network. ``--refresh`` downloads qemu and reads the index again, rebuilding the sysroot.

The emulated interpreter gets a clean environment: no PYTHON* or LD_* variable of this machine, no user
site-packages (``-s``), ``PYTHONPATH`` = the ``--path`` directories only, ``LC_ALL=C.UTF-8``, ``TZ=UTC``; and
``-B``: it reads the .pyc files it finds (the artifact's, as Lambda does) and writes none.
Exit status: the command's, or 2 with ``arm64_python: error: ...`` when the setup fails.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MIRROR = "https://deb.debian.org/debian"
SUITE = "trixie"
ARCH = "arm64"
ROOTS = ("python3.13-minimal", "libpython3.13-minimal", "libpython3.13-stdlib")
PYTHON = "usr/bin/python3.13"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
QEMU_PACKAGE = "qemu-user-static"
QEMU_NAMES = ("qemu-aarch64-static", "qemu-aarch64")
# Every wait has a deadline, every download a size cap.
HTTP_TIMEOUT_S = 60.0
APT_TIMEOUT_S = 600.0
MAX_INDEX_BYTES = 64 * 1024 * 1024  # Packages.xz is ~10 MB, InRelease ~150 KB
MAX_DEB_BYTES = 128 * 1024 * 1024
MAX_PACKAGES = 80  # the closure is ~25 packages; more means the resolver is pulling in something unexpected
STAMP_FORMAT = 2  # 2: the stdlib is byte-compiled


class SetupError(Exception):
    """The emulator or the interpreter could not be made ready; the message says which step and which file."""


@dataclass(frozen=True, slots=True)
class Package:
    """One stanza of a Debian ``Packages`` index (the fields this tool uses)."""

    name: str
    version: str
    filename: str
    sha256: str
    size: int
    depends: tuple[tuple[str, ...], ...]  # each entry: alternatives, first preferred
    provides: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Emulator:
    """A ready qemu and sysroot: builds the command line and environment of an emulated Python run."""

    qemu: Path
    sysroot: Path

    @property
    def python(self) -> Path:
        return self.sysroot / PYTHON

    def command(self, python_args: Sequence[str]) -> list[str]:
        # The interpreter by its host path: Python finds its prefix (sysroot/usr) next to it, so no host
        # library directory is ever searched. -s: no user site-packages (HOME is this machine's). -B: nothing is
        # written next to the sources (the artifact's own .pyc files are read, as Lambda reads them).
        return [str(self.qemu), "-L", str(self.sysroot), str(self.python), "-s", "-B", *python_args]

    def environment(self, paths: Sequence[Path | str], base: Mapping[str, str] | None = None) -> dict[str, str]:
        source = os.environ if base is None else base
        env = {k: v for k, v in source.items() if not k.startswith(("PYTHON", "LD_", "QEMU_"))}
        env |= {"LC_ALL": "C.UTF-8", "TZ": "UTC"}
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in paths)
        return env


# ---------------------------------------------------------------------------------------------------- the cache
def default_cache() -> Path:
    explicit = os.environ.get("CAPI_RELAY_ARM64_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "capi-relay" / "arm64-python3.13"


LOCK_TIMEOUT_S = 1800.0  # a cold setup takes ~2.5 min here; another one holding the lock longer is stuck


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One setup at a time per cache (make and pytest may start together); waits at most LOCK_TIMEOUT_S."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SetupError(f"{cache / '.lock'}: another setup held it for {LOCK_TIMEOUT_S:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(cache: Path, *, qemu: Path | None = None, refresh: bool = False, log: bool = True) -> Emulator:
    """The emulator, downloading and unpacking what is missing. Raises SetupError."""
    with locked(cache):
        for leftover in (*cache.glob("sysroot-building-*"), *cache.glob("debs-*"), *cache.glob("qemu-download-*")):
            shutil.rmtree(leftover, ignore_errors=True)  # a setup killed midway (the lock says none is running)
        if refresh:
            shutil.rmtree(cache / "qemu", ignore_errors=True)
        emulator = qemu if qemu is not None else ensure_qemu(cache, log=log)
        sysroot = ensure_sysroot(cache, emulator, refresh=refresh, log=log)
    return Emulator(emulator, sysroot)


def say(log: bool, message: str) -> None:
    if log:
        print(f"arm64_python: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------- qemu
def ensure_qemu(cache: Path, *, log: bool = True) -> Path:
    """Debian's qemu-aarch64-static for this machine, unpacked into the cache; else one on PATH."""
    explicit = os.environ.get("CAPI_RELAY_QEMU")
    if explicit:
        return _usable_qemu(Path(explicit))
    target = cache / "qemu" / "qemu-aarch64-static"
    if target.is_file():
        return target
    problems: list[str] = []
    if shutil.which("apt-get") and shutil.which("dpkg-deb"):
        try:
            return _qemu_from_apt(cache, target, log)
        except SetupError as exc:
            problems.append(str(exc))
    else:
        problems.append("apt-get or dpkg-deb is not on PATH (not a Debian/Ubuntu machine)")
    for name in QEMU_NAMES:
        found = shutil.which(name)
        if found:
            say(log, f"using {found} from PATH ({'; '.join(problems)})")
            return _usable_qemu(Path(found))
    raise SetupError(
        "no qemu user-mode emulator: " + "; ".join(problems) + f"; and none of {', '.join(QEMU_NAMES)} is on PATH "
        "(install qemu-user-static, or pass --qemu FILE / CAPI_RELAY_QEMU)"
    )


def _qemu_from_apt(cache: Path, target: Path, log: bool) -> Path:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache, prefix="qemu-download-") as tmp:
        try:
            done = subprocess.run(  # noqa: S603 -- fixed arguments
                [_tool("apt-get"), "download", QEMU_PACKAGE], cwd=tmp, capture_output=True, text=True,
                timeout=APT_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise SetupError(f"`apt-get download {QEMU_PACKAGE}` took over {APT_TIMEOUT_S:.0f} s") from exc
        debs = sorted(Path(tmp).glob(f"{QEMU_PACKAGE}_*.deb"))
        if done.returncode != 0 or not debs:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SetupError(f"`apt-get download {QEMU_PACKAGE}` failed ({tail}; try `apt-get update`)")
        deb = debs[0]
        member = "./usr/bin/qemu-aarch64-static"
        partial = target.with_name(target.name + ".part")
        partial.parent.mkdir(parents=True, exist_ok=True)
        _extract_member(deb, member, partial)
        partial.chmod(0o755)
        partial.replace(target)
        version = _deb_field(deb, "Version")
        size = deb.stat().st_size
    (target.parent / "version.txt").write_text(f"{QEMU_PACKAGE} {version} ({deb.name}, {size} bytes)\n")
    say(log, f"qemu: {deb.name} ({size / 1e6:.1f} MB) via apt-get in {time.monotonic() - started:.1f} s")
    return _usable_qemu(target)


def _extract_member(deb: Path, member: str, dest: Path) -> None:
    """One file of a .deb's data archive, without unpacking the rest (qemu-user-static holds ~370 MB)."""
    fsys = [_tool("dpkg-deb"), "--fsys-tarfile", str(deb)]
    with subprocess.Popen(fsys, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:  # noqa: S603
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for info in archive:
                if info.name == member and info.isfile():
                    source = archive.extractfile(info)
                    assert source is not None
                    with dest.open("wb") as out:
                        shutil.copyfileobj(source, out)
                    break
            else:
                raise SetupError(f"{deb.name} has no {member}")
        proc.stdout.close()
        proc.wait(timeout=APT_TIMEOUT_S)  # dpkg-deb is killed by SIGPIPE after an early break: not an error


def _deb_field(deb: Path, field: str) -> str:
    command = [_tool("dpkg-deb"), "-f", str(deb), field]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    return done.stdout.strip() or "?"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SetupError(f"{name} is not on PATH (this tool unpacks Debian packages with dpkg-deb)")
    return found


def _usable_qemu(path: Path) -> Path:
    try:
        command = [str(path), "--version"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    except OSError as exc:
        raise SetupError(f"qemu {path} cannot run: {exc}") from exc
    if done.returncode != 0:
        raise SetupError(f"qemu {path} --version failed: {done.stderr.strip()[:200]}")
    return path


# ----------------------------------------------------------------------------------------------- the sysroot
def ensure_sysroot(cache: Path, qemu: Path, *, refresh: bool = False, log: bool = True) -> Path:
    sysroot, stamp = cache / "sysroot", cache / "sysroot.json"
    if not refresh and stamp.is_file() and (sysroot / PYTHON).is_file():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(stamp.read_text()).get("format") == STAMP_FORMAT:
                return sysroot
    started = time.monotonic()
    index = read_index(log)
    packages = resolve(index, ROOTS)
    total = sum(p.size for p in packages)
    say(log, f"{len(packages)} packages from {MIRROR} {SUITE}/{ARCH}, {total / 1e6:.1f} MB")
    building = Path(tempfile.mkdtemp(dir=cache, prefix="sysroot-building-"))
    try:
        with tempfile.TemporaryDirectory(dir=cache, prefix="debs-") as debs:
            for package in packages:
                deb = download_deb(package, Path(debs))
                unpack(deb, building)
                deb.unlink()
        finish_sysroot(building)
        stamp.unlink(missing_ok=True)
        if sysroot.exists():
            shutil.rmtree(sysroot)
        building.replace(sysroot)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    compile_stdlib(qemu, sysroot, log)  # before the stamp: an interrupted compile is redone next time
    version = next(p.version for p in packages if p.name == ROOTS[0])
    stamp.write_text(
        json.dumps(
            {
                "format": STAMP_FORMAT,
                "source": f"{MIRROR} {SUITE} main {ARCH}",
                "python3.13": version,
                "download_bytes": total,
                "packages": [{"name": p.name, "version": p.version, "sha256": p.sha256} for p in packages],
            },
            indent=1,
        )
        + "\n"
    )
    say(log, f"sysroot: CPython {version} in {sysroot} ({time.monotonic() - started:.1f} s)")
    return sysroot


def fetch(url: str, limit: int) -> bytes:
    """The body of ``url`` (at most ``limit`` bytes). Raises SetupError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310 -- a fixed https mirror
            body: bytes = response.read(limit + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise SetupError(f"download failed: {url}: {exc}") from exc
    if len(body) > limit:
        raise SetupError(f"download failed: {url}: larger than {limit} bytes")
    return body


def read_index(log: bool = True) -> dict[str, Package]:
    """trixie's arm64 Packages index, checked through InRelease."""
    base = f"{MIRROR}/dists/{SUITE}"
    release = fetch(f"{base}/InRelease", MAX_INDEX_BYTES)
    _verify_release(release, f"{base}/InRelease", log)
    wanted = f"main/binary-{ARCH}/Packages.xz"
    match = re.search(rf"^ ([0-9a-f]{{64}}) +(\d+) {re.escape(wanted)}$", _sha256_section(release), re.MULTILINE)
    if match is None:
        raise SetupError(f"{base}/InRelease lists no SHA256 for {wanted}")
    # by hash (the suite has Acquire-By-Hash): the file InRelease names even while the mirror updates
    url = f"{base}/main/binary-{ARCH}/by-hash/SHA256/{match.group(1)}"
    compressed = fetch(url, MAX_INDEX_BYTES)
    if hashlib.sha256(compressed).hexdigest() != match.group(1):
        raise SetupError(f"{url} ({wanted}): SHA256 differs from InRelease's")
    try:
        text = lzma.decompress(compressed).decode("utf-8")
    except (lzma.LZMAError, UnicodeDecodeError) as exc:
        raise SetupError(f"{base}/{wanted}: cannot decompress: {exc}") from exc
    return parse_packages(text)


def _sha256_section(release: bytes) -> str:
    text = release.decode("utf-8", "replace")
    section = text.split("\nSHA256:\n", 1)
    return section[1] if len(section) == 2 else ""


def _verify_release(release: bytes, url: str, log: bool) -> None:
    gpgv = shutil.which("gpgv")
    if gpgv is None or not KEYRING.is_file():
        say(log, f"{url}: signature not checked (gpgv or {KEYRING} missing); trusting HTTPS")
        return
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as handle:
        handle.write(release)
        handle.flush()
        done = subprocess.run(  # noqa: S603 -- fixed arguments
            [gpgv, "--keyring", str(KEYRING), handle.name], capture_output=True, text=True, timeout=60, check=False
        )
    if done.returncode != 0:
        raise SetupError(f"{url}: bad signature: {done.stderr.strip()[-300:]}")


def parse_packages(text: str) -> dict[str, Package]:
    """``Package`` name -> stanza (the first one of a name wins; the index holds one version per name)."""
    packages: dict[str, Package] = {}
    for stanza in text.split("\n\n"):
        fields = dict(_fields(stanza))
        name = fields.get("Package")
        if not name or name in packages:
            continue
        try:
            packages[name] = Package(
                name, fields["Version"], fields["Filename"], fields["SHA256"], int(fields["Size"]),
                _relations(fields.get("Pre-Depends", "") + "," + fields.get("Depends", "")),
                tuple(alt[0] for alt in _relations(fields.get("Provides", ""))),
            )  # fmt: skip
        except (KeyError, ValueError):
            continue  # a stanza without a file or hash cannot be installed; a resolver miss names it later
    return packages


def _fields(stanza: str) -> Iterator[tuple[str, str]]:
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t") or ":" not in line:
            continue  # continuation lines (Description) are not needed
        key, _, value = line.partition(":")
        yield key, value.strip()


def _relations(field: str) -> tuple[tuple[str, ...], ...]:
    """``a (>= 1) | b, c:any`` -> ``(("a", "b"), ("c",))`` (versions and arch qualifiers dropped)."""
    out = []
    for group in field.split(","):
        names = tuple(alt.strip().split(" ", 1)[0].split(":", 1)[0] for alt in group.split("|") if alt.strip())
        if names:
            out.append(names)
    return tuple(out)


def resolve(index: Mapping[str, Package], roots: Sequence[str]) -> list[Package]:
    """The Depends/Pre-Depends closure of ``roots``: first alternative that exists, virtual names by provider."""
    providers: dict[str, str] = {}
    for package in index.values():
        for virtual in package.provides:
            providers.setdefault(virtual, package.name)
    chosen: dict[str, Package] = {}
    todo: list[tuple[str, ...]] = [(root,) for root in roots]
    while todo:
        alternatives = todo.pop()
        if any(name in chosen for name in alternatives):
            continue
        name = next((n for n in alternatives if n in index), None)
        name = name or next((providers[n] for n in alternatives if n in providers), None)
        if name is None:
            raise SetupError(f"{SUITE}/{ARCH} Packages has none of {' | '.join(alternatives)}")
        if name in chosen:
            continue
        chosen[name] = index[name]
        todo.extend(index[name].depends)
        if len(chosen) > MAX_PACKAGES:
            raise SetupError(f"the dependency closure of {', '.join(roots)} passed {MAX_PACKAGES} packages")
    return sorted(chosen.values(), key=lambda p: p.name)


def download_deb(package: Package, directory: Path) -> Path:
    url = f"{MIRROR}/{package.filename}"
    if package.size > MAX_DEB_BYTES:
        raise SetupError(f"{url}: {package.size} bytes, over the {MAX_DEB_BYTES} cap")
    body = fetch(url, package.size)
    if hashlib.sha256(body).hexdigest() != package.sha256:
        raise SetupError(f"{url}: SHA256 differs from the Packages index ({package.name} {package.version})")
    deb = directory / Path(package.filename).name
    deb.write_bytes(body)
    return deb


def unpack(deb: Path, root: Path) -> None:
    command = [_tool("dpkg-deb"), "-x", str(deb), str(root)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
    if done.returncode != 0:
        raise SetupError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()[:300]}")


def finish_sysroot(root: Path) -> None:
    """What base-files and ldconfig would add: the merged-/usr links (the aarch64 loader is
    /lib/ld-linux-aarch64.so.1) and an empty ld.so.cache, so the guest's loader never reads this machine's."""
    for link in ("bin", "sbin", "lib"):
        if not (root / link).exists():
            (root / link).symlink_to(f"usr/{link}")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "ld.so.cache").write_bytes(b"")
    if not (root / PYTHON).is_file():
        raise SetupError(f"the unpacked packages hold no /{PYTHON}")


def compile_stdlib(qemu: Path, sysroot: Path, log: bool) -> None:
    """Byte-compile the standard library once, with the emulated interpreter itself (what Debian's py3compile
    does at install): runs use -B, so without this every run would compile each stdlib module it imports.
    Sequential: a process pool under qemu user mode cannot start aarch64 children (no binfmt_misc)."""
    started = time.monotonic()
    emulator = Emulator(qemu, sysroot)
    stdlib = str(sysroot / "usr" / "lib" / "python3.13")
    command = [str(qemu), "-L", str(sysroot), str(emulator.python), "-s", "-m", "compileall", "-q", stdlib]
    try:
        done = subprocess.run(  # noqa: S603 -- fixed arguments
            command, env=emulator.environment([]), capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"compiling {stdlib} under emulation took over {APT_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-500:]
        raise SetupError(f"the emulated python3.13 -m compileall {stdlib} failed (exit {done.returncode}): {tail}")
    say(log, f"stdlib byte-compiled by the emulated interpreter in {time.monotonic() - started:.1f} s")


# ------------------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arm64_python.py",
        description="Run Python in an emulated aarch64 CPython 3.13 (Debian trixie, qemu user mode).",
        epilog="Example: python scripts/arm64_python.py --path .aws-sam/build/RelayFunction -- -c "
        "'import platform; print(platform.machine())'",
    )
    parser.add_argument("--cache", type=Path, default=None, help=f"cache directory (default: {default_cache()})")
    parser.add_argument("--path", action="append", default=[], metavar="DIR", help="PYTHONPATH entry (repeatable)")
    parser.add_argument("--qemu", type=Path, default=None, help="a qemu-aarch64 binary to use instead")
    parser.add_argument("--refresh", action="store_true", help="download qemu and trixie's packages again")
    parser.add_argument("--setup", action="store_true", help="only download/unpack; print the paths")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds the command may run (3600)")
    parser.add_argument("python_args", nargs=argparse.REMAINDER, help="-- then the arguments of python3.13")
    args = parser.parse_args(argv)
    python_args = list(args.python_args)
    if python_args[:1] == ["--"]:
        python_args = python_args[1:]
    if not python_args and not args.setup:
        parser.error("nothing to run: give `-- <python args...>` (or --setup)")
    cache = (args.cache or default_cache()).expanduser().resolve()
    try:
        emulator = ensure(cache, qemu=args.qemu, refresh=args.refresh)
    except SetupError as exc:
        print(f"arm64_python: error: {exc}", file=sys.stderr)
        return 2
    if args.setup:
        print(json.dumps({"qemu": str(emulator.qemu), "sysroot": str(emulator.sysroot), "cache": str(cache)}))
        return 0
    try:
        done = subprocess.run(  # noqa: S603 -- the caller's command, by design
            emulator.command(python_args), env=emulator.environment(args.path), timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        print(f"arm64_python: error: the command ran over {args.timeout:.0f} s", file=sys.stderr)
        return 2
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

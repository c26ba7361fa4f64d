"""The arm64 tools' own logic, without qemu or the network (scripts/arm64_python.py, arm64_artifact_check.py,
arm64_check.py): the Packages index parser and resolver, the emulated run's command line and environment, the
corpus, and the checker run on this machine's Python against src/ (its checks must be able to fail)."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from scripts import arm64_python
from scripts.arm64_artifact_check import handlers
from scripts.arm64_check import corpus, edge_cases
from scripts.arm64_python import Emulator, SetupError, parse_packages, resolve

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "scripts" / "arm64_artifact_check.py"

# Stanzas as trixie's Packages index writes them (fields trimmed; a Description continuation line kept).
INDEX = """\
Package: python3.13-minimal
Version: 3.13.5-2+deb13u5
Pre-Depends: libc6 (>= 2.38)
Depends: libpython3.13-minimal (= 3.13.5-2+deb13u5), libexpat1 (>= 2.6.0), zlib1g (>= 1:1.2.0)
Filename: pool/main/p/python3.13/python3.13-minimal_3.13.5-2+deb13u5_arm64.deb
Size: 2008016
SHA256: aaaa
Description: Minimal subset of the Python language
 continuation: not a field

Package: libpython3.13-minimal
Version: 3.13.5-2+deb13u5
Depends: libc6 (>= 2.17), libssl3t64 (>= 3.4.0)
Filename: pool/main/p/python3.13/libpython3.13-minimal_3.13.5-2+deb13u5_arm64.deb
Size: 856328
SHA256: bbbb

Package: libc6
Version: 2.41-12+deb13u5
Depends: libgcc-s1
Filename: pool/main/g/glibc/libc6_2.41-12+deb13u5_arm64.deb
Size: 2488872
SHA256: cccc

Package: libgcc-s1
Version: 14.2.0-19
Depends: gcc-14-base (= 14.2.0-19), libc6 (>= 2.35)
Filename: pool/main/g/gcc-14/libgcc-s1_14.2.0-19_arm64.deb
Size: 54104
SHA256: dddd

Package: libexpat1
Version: 2.9.0-1~deb13u1
Depends: libc6:any (>= 2.36)
Filename: pool/main/e/expat/libexpat1_2.9.0-1~deb13u1_arm64.deb
Size: 113920
SHA256: eeee

Package: zlib1g
Version: 1:1.3.dfsg+really1.3.1-1+deb13u1
Provides: libz1
Filename: pool/main/z/zlib/zlib1g_1.3.dfsg+really1.3.1-1+deb13u1_arm64.deb
Size: 85028
SHA256: ffff

Package: libssl3t64
Version: 3.5.9-1~deb13u1
Depends: libc6 (>= 2.38), openssl-provider | libz1
Filename: pool/main/o/openssl/libssl3t64_3.5.9-1~deb13u1_arm64.deb
Size: 2775368
SHA256: 1111

Package: gcc-14-base
Version: 14.2.0-19
Filename: pool/main/g/gcc-14/gcc-14-base_14.2.0-19_arm64.deb
Size: 49444
SHA256: 2222

Package: unrelated
Version: 1
Filename: pool/main/u/unrelated_1_arm64.deb
Size: 1
SHA256: 3333
"""


def test_the_index_parser_reads_files_hashes_and_relations_without_versions_or_arch_qualifiers() -> None:
    index = parse_packages(INDEX)
    python = index["python3.13-minimal"]
    assert python.filename == "pool/main/p/python3.13/python3.13-minimal_3.13.5-2+deb13u5_arm64.deb"
    assert (python.sha256, python.size) == ("aaaa", 2008016)
    assert python.depends == (("libc6",), ("libpython3.13-minimal",), ("libexpat1",), ("zlib1g",))
    assert index["libexpat1"].depends == (("libc6",),)  # libc6:any
    assert index["libssl3t64"].depends == (("libc6",), ("openssl-provider", "libz1"))
    assert index["zlib1g"].provides == ("libz1",)


def test_the_closure_follows_pre_depends_and_depends_and_a_virtual_name_by_its_provider() -> None:
    names = [p.name for p in resolve(parse_packages(INDEX), ["python3.13-minimal"])]
    # openssl-provider | libz1: no package is called either; libz1 is provided by zlib1g, already chosen
    assert names == sorted(
        ["python3.13-minimal", "libpython3.13-minimal", "libc6", "libgcc-s1", "gcc-14-base", "libexpat1", "zlib1g",
         "libssl3t64"]
    )  # fmt: skip


def test_a_dependency_the_index_cannot_satisfy_names_it() -> None:
    index = parse_packages(INDEX.replace("Package: libgcc-s1", "Package: libgcc-renamed"))
    with pytest.raises(SetupError, match="none of libgcc-s1"):
        resolve(index, ["python3.13-minimal"])


def test_the_emulated_run_gets_no_python_or_loader_variable_of_this_machine() -> None:
    emulator = Emulator(Path("/cache/qemu/qemu-aarch64-static"), Path("/cache/sysroot"))
    base = {"PATH": "/usr/bin", "HOME": "/home/u", "PYTHONPATH": "/host/site", "PYTHONHOME": "/usr",
            "PYTHONSTARTUP": "x.py", "LD_PRELOAD": "libx86.so", "LD_LIBRARY_PATH": "/usr/lib/x86_64-linux-gnu",
            "QEMU_LD_PREFIX": "/elsewhere", "LANG": "de_DE.UTF-8"}  # fmt: skip
    env = emulator.environment(["/artifact", "/more"], base=base)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/u", "LANG": "de_DE.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
                   "PYTHONPATH": "/artifact:/more"}  # fmt: skip
    assert "PYTHONPATH" not in emulator.environment([], base=base)
    assert emulator.command(["-c", "pass"]) == [
        "/cache/qemu/qemu-aarch64-static", "-L", "/cache/sysroot", "/cache/sysroot/usr/bin/python3.13", "-s", "-B",
        "-c", "pass",
    ]  # fmt: skip


def test_the_checker_finds_each_handler_of_the_template_with_its_function() -> None:
    assert handlers(ROOT / "template.yaml") == [
        ("RelayFunction", "capi_relay.handler"),
        ("QualityFunction", "capi_relay.quality.handler"),
    ]


def test_the_corpus_survives_a_json_file_with_its_lone_surrogates_and_non_ascii_names() -> None:
    data = corpus(5, seed=3)
    text = json.dumps(data, ensure_ascii=True)
    assert text.isascii()
    assert json.loads(text) == data
    assert len(data["events"]) == 5 + len(edge_cases())
    values = json.dumps(edge_cases(), ensure_ascii=False)
    for needle in ("Zoë", "Müller", "山田", "\ud800", "advertiser_tracking_enabled"):
        assert needle in values


def _checker(tmp_path: Path, *args: str, events: int = 20) -> subprocess.CompletedProcess[str]:
    corpus_file = tmp_path / "corpus.json"
    corpus_file.write_text(json.dumps(corpus(events, seed=5), ensure_ascii=True))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-s", str(CHECKER), "--corpus", str(corpus_file), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_checker_on_this_machine_prints_one_line_per_event_and_reports_what_it_loaded(tmp_path: Path) -> None:
    done = _checker(tmp_path, "--root", str(ROOT / "src"), "--report", str(tmp_path / "report.json"))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["i"] for row in rows] == list(range(20 + len(edge_cases())))
    assert all(row["encoded"].startswith('{"event_name":"Purchase"') for row in rows[:20])
    assert {row["rejected"] for row in rows if "rejected" in row} >= {"invalid_unicode", "not_an_object"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["handlers"] == ["capi_relay.handler", "capi_relay.quality.handler"]
    assert report["compiled"] == []
    assert report["modules"] > 20


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--root", "/nonexistent"], "outside /nonexistent"),  # capi_relay came from elsewhere
        (["--expect-compiled", "capi_relay.prepare.normalize"], f"not a {platform.machine()} .so"),  # pure Python
        (["--machine", "pdp11"], "not 'pdp11'"),  # not the machine it must run on
    ],
)
def test_the_checker_fails_when_a_module_is_not_where_or_what_it_must_be(
    tmp_path: Path, args: list[str], reason: str
) -> None:
    root = [] if "--root" in args else ["--root", str(ROOT / "src")]
    done = _checker(tmp_path, *root, *args, events=1)
    assert done.returncode == 1
    assert "FAILED" in done.stderr
    assert reason in done.stderr
    assert done.stdout == ""


def test_a_download_that_fails_names_the_url() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/debian/pool/main/p/python3.13/python3.13-minimal.deb"
    with pytest.raises(SetupError, match=rf"download failed: {url}: "):
        arm64_python.fetch(url, 100)


def test_a_deb_whose_hash_differs_from_the_index_is_refused_and_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = parse_packages(INDEX)["libc6"]
    monkeypatch.setattr(arm64_python, "fetch", lambda url, limit: b"not the file the index names")
    with pytest.raises(SetupError, match=r"libc6_2\.41-12\+deb13u5_arm64\.deb: SHA256 differs .* \(libc6 2\.41"):
        arm64_python.download_deb(package, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_download_larger_than_its_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Response:
        def __enter__(self) -> Response:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self, size: int) -> bytes:
            return b"x" * size  # an endless body

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(SetupError, match="larger than 10 bytes"):
        arm64_python.fetch("https://deb.debian.org/debian/dists/trixie/InRelease", 10)


def test_the_setup_lock_is_waited_for_with_a_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    monkeypatch.setattr(arm64_python, "LOCK_TIMEOUT_S", 0.2)
    with (tmp_path / ".lock").open("w") as holder:  # another setup holds the cache's lock
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(arm64_python.SetupError, match="another setup held it"), arm64_python.locked(tmp_path):
            pass
    with arm64_python.locked(tmp_path):  # released: taken at once
        pass

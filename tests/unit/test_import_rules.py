"""What may import what in ``src/capi_relay`` (ARCHITECTURE.md, "What may import what"), checked on the import
graph read from the source with ``ast``: every ``import`` / ``from ... import`` of a ``capi_relay`` module,
at module level or inside a function (a lazy import is a dependency too).

Every module belongs to a stage. In the target layout the stage is the sub-package
(``capi_relay.<stage>.<module>``) or, for the modules at the top of the package, ``TOP_LEVEL``; until the
files move, ``STAGE_OF`` names the stage of each flat module. After the move (``git mv`` into the
sub-packages) delete ``STAGE_OF``: :func:`stage_of` derives the same stages from the paths.

Rules: an import stays inside its stage or goes to a stage ``MAY_IMPORT`` allows (handler/app on top, the
operator tools and the quality reader beside the relay, never imported by it); no import cycle; nothing the
two Lambda handlers reach imports an operator tool; and the build's list of operator tools
(``OPERATOR_TOOLS`` in src/Makefile, left out of the Lambda artifact) is exactly the ``tools`` stage.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from capi_relay.compiled import COMPILED_MODULES
from tests.sam_cli import run_sam

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "capi_relay"
HANDLERS = ("capi_relay.handler", "capi_relay.quality.handler")  # template.yaml: RelayFunction, QualityFunction

# ------------------------------------------------------------------------------------------------ stages
# Every module below capi_relay.<stage>. takes its stage from the sub-package (stage_of); modules left at the
# top are listed in TOP_LEVEL. A flat module that is in neither fails the test ("has no stage").
STAGE_OF: dict[str, str] = {}

# The modules that stay at the top of the package (they do not move).
TOP_LEVEL: dict[str, str] = {
    "capi_relay": "base",  # __init__: the version
    "capi_relay._compat": "base",
    "capi_relay.compiled": "base",  # which modules the compiled core holds, and which kind was loaded
    "capi_relay.settings": "settings",
    "capi_relay.relay": "relay",
    "capi_relay.handler": "top",
    "capi_relay.app": "top",
    "capi_relay.telemetry": "top",
    "capi_relay.__main__": "tools",  # `python -m capi_relay`: the console script
}

LAMBDA_STAGES = frozenset({"base", "settings", "ingest", "prepare", "fate", "aws", "deliver", "relay", "top"})
RELAY_STAGES = LAMBDA_STAGES - {"top"}  # what the top, the quality reader and the tools may import
STAGES = LAMBDA_STAGES | {"quality", "tools"}

# Which other stages a stage's modules may import (imports within a stage are always allowed).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "base": frozenset(),
    "settings": frozenset({"base"}),
    "ingest": frozenset({"base", "settings"}),
    "prepare": frozenset({"base", "settings", "ingest"}),
    "fate": frozenset({"base", "settings", "ingest"}),
    "aws": frozenset({"base", "settings", "fate"}),  # the SQS adapter sends fate's letters
    "deliver": frozenset({"base", "settings", "ingest", "fate", "aws"}),  # the FIFO gate; credentials
    "relay": frozenset({"base", "settings", "ingest", "prepare", "fate", "aws", "deliver"}),
    "top": RELAY_STAGES,
    "quality": RELAY_STAGES,
    "tools": RELAY_STAGES | {"quality"},
}


def stage_of(module: str) -> str:
    """The stage of a module: STAGE_OF (flat modules, until they move), TOP_LEVEL, else its sub-package."""
    if module in STAGE_OF:
        return STAGE_OF[module]
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in STAGES:  # capi_relay.<stage> (its __init__) or capi_relay.<stage>.<module>
        return parts[1]
    raise AssertionError(f"{module} has no stage: add it to TOP_LEVEL or put it in a stage's sub-package")


# ------------------------------------------------------------------------------------------ import graph
def module_files(src: Path = SRC) -> dict[str, Path]:
    """Module name -> file for every .py under ``src/capi_relay`` (a package is its ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_modules(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The capi_relay modules ``module``'s source imports anywhere in it (lazy imports included)."""
    known = set(known)
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:  # `from capi_relay.tools import dlq` imports the module capi_relay.tools.dlq
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    out.discard(module)
    return out


def import_graph(src: Path = SRC, known: Iterable[str] = ()) -> dict[str, set[str]]:
    """Module -> the capi_relay modules it imports. ``known``: further module names that exist (so that
    ``from capi_relay import x`` means the module ``x`` even where the tree read has no ``x``)."""
    files = module_files(src)
    names = set(files) | set(known)
    return {module: imported_modules(module, path, names) for module, path in files.items()}


GRAPH = import_graph()


def violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every import a stage may not make, as ``importer (stage) -> imported (stage)``."""
    out = []
    for importer, imported in sorted(graph.items()):
        for target in sorted(imported):
            a, b = stage_of(importer), stage_of(target)
            if a != b and b not in MAY_IMPORT[a]:
                out.append(f"{importer} ({a}) -> {target} ({b})")
    return out


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles of the graph: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: Mapping[str, Iterable[str]], roots: Iterable[str]) -> set[str]:
    """Every module the roots import, directly or not (parent packages included: Python imports them first)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:n]) for n in range(1, len(parts)))
        todo.extend(graph.get(module, ()))
    return seen


def makefile_operator_tools() -> list[str]:
    """The OPERATOR_TOOLS entries of src/Makefile: paths under capi_relay/ the build leaves out."""
    match = re.search(r"^OPERATOR_TOOLS\s*:=\s*(.+)$", (SRC / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "src/Makefile has no OPERATOR_TOOLS list"
    return match.group(1).split()


def modules_under(entries: Iterable[str], files: Mapping[str, Path], package_dir: Path) -> set[str]:
    """The modules whose file is one of ``entries`` (paths relative to ``package_dir``) or inside one."""
    roots = [package_dir / entry for entry in entries]
    return {m for m, path in files.items() if any(path == r or r in path.parents for r in roots)}


# ----------------------------------------------------------------------------------------------- tests
def test_every_module_has_a_stage_and_every_flat_name_exists() -> None:
    assert {stage_of(m) for m in GRAPH} <= STAGES
    assert set(STAGE_OF) <= set(GRAPH), sorted(set(STAGE_OF) - set(GRAPH))  # a stale entry after a move
    assert set(MAY_IMPORT) == STAGES
    assert all(MAY_IMPORT[stage] <= STAGES for stage in STAGES)


def test_the_graph_sees_module_level_and_lazy_imports() -> None:
    assert "capi_relay.app" in GRAPH["capi_relay.handler"]  # module level
    assert (
        "capi_relay.prepare._tables.countries" in GRAPH["capi_relay.prepare.normalize"]
    )  # inside a function (a generated table)
    assert "capi_relay.tools.dlq" in GRAPH["capi_relay.tools.cli"]  # from capi_relay.tools import dlq
    assert "capi_relay.tools.quality" in GRAPH["capi_relay.tools.cli"]  # from capi_relay.tools import quality
    assert "capi_relay" in GRAPH["capi_relay.deliver.client"]  # from capi_relay import __version__


def test_each_stage_imports_only_what_it_may() -> None:
    assert violations(GRAPH) == []


def test_no_import_cycle() -> None:
    assert cycles(GRAPH) == []


def test_nothing_the_lambda_handlers_reach_is_an_operator_tool() -> None:
    reached = reachable(GRAPH, HANDLERS)
    assert set(HANDLERS) <= set(GRAPH)
    assert {m for m in reached if stage_of(m) == "tools"} == set()
    assert reached <= set(GRAPH), sorted(reached - set(GRAPH))  # every module they import exists


def test_the_build_leaves_out_exactly_the_operator_tools() -> None:
    # The list in src/Makefile and the tools stage cannot drift apart: a new tool is left out of the
    # artifact, and no module a handler needs is.
    files = module_files()
    left_out = modules_under(makefile_operator_tools(), files, SRC / PACKAGE)
    assert left_out == {m for m in GRAPH if stage_of(m) == "tools"}
    assert not left_out & reachable(GRAPH, HANDLERS)


def test_architecture_md_states_these_rules() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text[text.index("## What may import what") :]
    documented = {}
    for row in re.findall(r"^\| `(\w+)` \|[^|]*\|([^|]*)\|$", section, re.MULTILINE):
        stage, allowed = row
        documented[stage] = frozenset(re.findall(r"`(\w+)`", allowed))
    assert documented == MAY_IMPORT


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("capi_relay.ingest.envelope", "capi_relay.deliver.engine"),  # ingest -> deliver: upwards
        ("capi_relay.handler", "capi_relay.tools.cli"),  # the Lambda path -> an operator tool
        ("capi_relay.relay", "capi_relay.app"),  # the sequence -> the wiring
        ("capi_relay.quality.reader", "capi_relay.tools.producer"),  # the quality reader -> a tool
        ("capi_relay.deliver.client", "capi_relay.relay"),
    ],
)
def test_the_rules_refuse_a_forbidden_import(importer: str, imported: str) -> None:
    assert violations({importer: [imported]}) == [
        f"{importer} ({stage_of(importer)}) -> {imported} ({stage_of(imported)})"
    ]


def test_a_cycle_and_a_tool_on_the_lambda_path_are_found() -> None:
    graph = {module: set(targets) for module, targets in GRAPH.items()}
    graph["capi_relay.tools.producer"].add("capi_relay.tools.cli")  # the cycle this layout removed
    assert cycles(graph) == [["capi_relay.tools.cli", "capi_relay.tools.producer"]]
    graph["capi_relay.telemetry"].add("capi_relay.tools.explain")
    assert "capi_relay.tools.explain" in reachable(graph, HANDLERS)


def test_stage_of_reads_the_sub_package_after_the_move(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "STAGE_OF", {})
    assert stage_of("capi_relay.ingest.envelope") == "ingest"
    assert stage_of("capi_relay.prepare._tables.countries") == "prepare"
    assert stage_of("capi_relay.tools.cli") == "tools"
    assert stage_of("capi_relay.deliver") == "deliver"  # the sub-package's __init__
    assert stage_of("capi_relay.handler") == "top"
    with pytest.raises(AssertionError, match="no stage"):
        stage_of("capi_relay.envelope")  # a flat module left behind


# ------------------------------------------------------------------------------------- the built artifact
@pytest.mark.sam
def test_sam_build_ships_no_operator_tool_and_everything_the_handlers_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Marked `sam`: `make lint` runs it; `make unit` deselects it. The makefile build needs python3.13 on PATH.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")
    build_dir = tmp_path / "build"
    result = run_sam(
        "sam", "build", "RelayFunction", "--template-file", str(ROOT / "template.yaml"),
        "--build-dir", str(build_dir), timeout_s=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    artifact = build_dir / "RelayFunction"
    shipped = module_files(artifact)
    assert set(HANDLERS) <= set(shipped)  # QualityFunction ships the same artifact (same makefile target)
    assert {m for m in shipped if stage_of(m) == "tools"} == set()
    graph = import_graph(artifact, known=GRAPH)  # an import of a module the build left out stays visible
    assert reachable(graph, HANDLERS) <= set(shipped)
    # no module left in the artifact imports one the build left out
    missing = {f"{m} -> {t}" for m, targets in graph.items() for t in targets if t not in shipped}
    assert missing == set()
    assert set(shipped) == {m for m in GRAPH if stage_of(m) != "tools"}  # and nothing else was left out
    assert list(artifact.joinpath(PACKAGE).rglob("*.pyc"))  # still byte-compiled
    # the compiled core (make sets CAPI_RELAY_CORE=required): an aarch64 extension beside each module's source
    suffix = ".cpython-313-aarch64-linux-gnu.so"
    expected = {artifact / "capi_relay_core__mypyc"} | {artifact.joinpath(*m.split(".")) for m in COMPILED_MODULES}
    extensions = {path.with_name(path.name.removesuffix(suffix)) for path in artifact.rglob(f"*{suffix}")}
    assert extensions - {artifact / "orjson" / "orjson"} == expected
    for path in expected:
        header = path.with_name(path.name + suffix).read_bytes()[:20]
        assert header[:4] == b"\x7fELF"
        assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
        assert path.name == "capi_relay_core__mypyc" or path.with_suffix(".py").is_file()  # the fallback ships too

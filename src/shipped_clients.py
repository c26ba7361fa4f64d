"""The AWS services the shipped ``capi_relay`` code creates botocore clients for: the build guard of the
botocore/data prune (src/Makefile, ``BOTOCORE_SERVICES``). Not part of the artifact (the build copies only
``capi_relay``); standard library only, so the build's python3.13 runs it as is.

Read from the source with ``ast``, never by importing it:

* every call ``<anything>.client("service", ...)`` / ``.create_client(...)`` names its service;
* a Powertools import counts as the service its utility wraps (``SecretsProvider`` -> ``secretsmanager``);
  the Powertools modules known to create no client (Logger, Metrics, typing) count as none.

Anything it cannot read is a problem, never a guess: a ``.client()`` whose service is not a string literal,
any ``.resource()`` (boto3/data, the resource models, is pruned too), a Powertools module or name not listed
here. The build fails on a problem or on a service missing from the kept list, naming it.

    python shipped_clients.py PACKAGE_DIR KEPT_SERVICE...
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

POWERTOOLS = "aws_lambda_powertools"
# Powertools modules whose imports create no AWS client (checked in aws_lambda_powertools 3.37: no
# .client()/.resource() in them): logging to stdout, metrics as EMF lines on stdout, the context's type.
POWERTOOLS_CLIENT_FREE_MODULES = frozenset({
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.logging.utils",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.utilities.typing",
})  # fmt: skip
POWERTOOLS_CLIENT_FREE_TOP = frozenset({"Logger", "Metrics", "single_metric"})  # from aws_lambda_powertools import
# aws_lambda_powertools.utilities.parameters: each provider wraps one service's client (DynamoDBProvider, a
# boto3 resource, is left out on purpose: it needs boto3/data). None: an exception type or cache helper.
POWERTOOLS_PARAMETERS = "aws_lambda_powertools.utilities.parameters"
PARAMETER_SERVICES: dict[str, str | None] = {
    "SecretsProvider": "secretsmanager",
    "get_secret": "secretsmanager",
    "get_secrets_by_name": "secretsmanager",
    "set_secret": "secretsmanager",
    "SSMProvider": "ssm",
    "get_parameter": "ssm",
    "get_parameters": "ssm",
    "get_parameters_by_name": "ssm",
    "set_parameter": "ssm",
    "AppConfigProvider": "appconfigdata",
    "get_app_config": "appconfigdata",
    "GetParameterError": None,
    "TransformParameterError": None,
    "clear_caches": None,
}


def _client_call(node: ast.Call, where: str) -> tuple[set[str], list[str]]:
    """The service of a ``.client()`` / ``.create_client()`` call, or a problem; ``.resource()`` is one."""
    assert isinstance(node.func, ast.Attribute)
    if node.func.attr == "resource":
        return set(), [f"{where}: .resource() needs boto3/data, which the build prunes"]
    named = [kw.value for kw in node.keywords if kw.arg == "service_name"]
    first = node.args[0] if node.args else (named[0] if named else None)
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return {first.value}, []
    return set(), [f"{where}: .{node.func.attr}() with a service name that is not a string literal"]


def _powertools_import(module: str, names: list[str], where: str) -> tuple[set[str], list[str]]:
    """The services a Powertools import wraps, or a problem for a module or name this file does not know."""
    if module in POWERTOOLS_CLIENT_FREE_MODULES or (module == POWERTOOLS and set(names) <= POWERTOOLS_CLIENT_FREE_TOP):
        return set(), []
    if module == POWERTOOLS_PARAMETERS or module.startswith(POWERTOOLS_PARAMETERS + "."):
        unknown = [name for name in names if name not in PARAMETER_SERVICES]
        found = {service for name in names if (service := PARAMETER_SERVICES.get(name))}
        return found, [f"{where}: {module}.{name} is not in shipped_clients.PARAMETER_SERVICES" for name in unknown]
    return set(), [f"{where}: {module} {names}: Powertools module not known to be client-free (shipped_clients.py)"]


def scan_source(source: str, filename: str) -> tuple[set[str], list[str]]:
    """(services, problems) of one module's source."""
    services: set[str] = set()
    problems: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        found: tuple[set[str], list[str]] = (set(), [])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in {"client", "create_client", "resource"}:
                found = _client_call(node, where)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == POWERTOOLS:
            found = _powertools_import(node.module or "", [alias.name for alias in node.names], where)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == POWERTOOLS and alias.name not in POWERTOOLS_CLIENT_FREE_MODULES:
                    found[1].append(f"{where}: import {alias.name}: import the names (from ... import) instead")
        services |= found[0]
        problems += found[1]
    return services, problems


def scan_package(package_dir: Path) -> tuple[set[str], list[str]]:
    """(services, problems) of every module under ``package_dir``."""
    services: set[str] = set()
    problems: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        found, trouble = scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(package_dir.parent)))
        services |= found
        problems += trouble
    return services, problems


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    services, problems = scan_package(Path(argv[0]))
    missing = sorted(services - set(argv[1:]))
    problems += [
        f"the shipped code creates a {name} client: add it to BOTOCORE_SERVICES in src/Makefile" for name in missing
    ]
    for problem in problems:
        print(f"shipped_clients: {problem}", file=sys.stderr)
    print(f"shipped_clients: the shipped code creates clients for {' '.join(sorted(services)) or 'no service'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The botocore/data prune of the Lambda artifact (src/Makefile ``BOTOCORE_SERVICES``): the kept services are
exactly the clients the shipped code creates, the build guard (src/shipped_clients.py) reads every way a client
is named, and the built artifact's own botocore creates and calls each client with no other service model.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import shipped_clients
from shipped_clients import scan_package, scan_source
from tests.sam_cli import run_sam
from tests.unit.test_import_rules import makefile_operator_tools

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def makefile_services() -> list[str]:
    """The BOTOCORE_SERVICES entries of src/Makefile."""
    text = (SRC / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^BOTOCORE_SERVICES\s*:=\s*(.+)$", text, re.MULTILINE)
    assert match, "src/Makefile has no BOTOCORE_SERVICES list"
    return match.group(1).split()


def shipped_package(into: Path) -> Path:
    """A copy of src/capi_relay as the build ships it: without the operator tools (OPERATOR_TOOLS)."""
    target = into / "capi_relay"
    shutil.copytree(SRC / "capi_relay", target, ignore=shutil.ignore_patterns("__pycache__"))
    for entry in makefile_operator_tools():
        path = target / entry
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return target


# ------------------------------------------------------------------------------------------ the kept list
def test_the_kept_services_are_exactly_the_clients_the_shipped_code_creates(tmp_path: Path) -> None:
    services, problems = scan_package(shipped_package(tmp_path))
    assert problems == []
    assert sorted(set(makefile_services())) == makefile_services()  # sorted, no duplicate
    assert set(makefile_services()) == services  # none missing (a broken artifact), none unused (dead weight)
    assert services == {"secretsmanager", "sqs"}  # the token; quarantine and parking


def test_the_guard_fails_the_build_naming_a_service_the_list_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = shipped_package(tmp_path)
    assert shipped_clients.main([str(package), *makefile_services()]) == 0
    assert shipped_clients.main([str(package), "sqs"]) == 1
    assert "creates a secretsmanager client: add it to BOTOCORE_SERVICES" in capsys.readouterr().err
    (package / "aws" / "extra.py").write_text('import boto3\nKMS = boto3.client(\n    "kms"\n)\n', encoding="utf-8")
    assert shipped_clients.main([str(package), *makefile_services()]) == 1
    assert "creates a kms client" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ what the guard reads
@pytest.mark.parametrize(
    ("source", "services"),
    [
        ('import boto3\nc = boto3.client("sqs", region_name="x")', {"sqs"}),
        ('c = boto3.session.Session().client(\n    "kms",\n    config=cfg,\n)', {"kms"}),  # over lines
        ('c = session.client(service_name="sns")', {"sns"}),
        ('c = botocore_session.create_client("events")', {"events"}),
        ("from aws_lambda_powertools.utilities.parameters import SecretsProvider", {"secretsmanager"}),
        ("from aws_lambda_powertools.utilities.parameters import get_parameter, get_secret", {"ssm", "secretsmanager"}),
        ("from aws_lambda_powertools.utilities.parameters.appconfig import AppConfigProvider", {"appconfigdata"}),
        ("from aws_lambda_powertools.utilities.parameters import GetParameterError", set()),
        ("from aws_lambda_powertools import Logger, Metrics", set()),
        ("from aws_lambda_powertools.metrics import MetricUnit, single_metric", set()),
        ("from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers", set()),
        ("from aws_lambda_powertools.utilities.typing import LambdaContext", set()),
        ("self._client = None\nx = self._client or make()", set()),  # an attribute named client, not a call
    ],
)
def test_the_guard_reads_each_way_a_client_is_named(source: str, services: set[str]) -> None:
    assert scan_source(source, "m.py") == (services, [])


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("c = boto3.client(name)", "not a string literal"),
        ("c = boto3.client(service_name=SERVICES[0])", "not a string literal"),
        ('t = boto3.resource("dynamodb")', "boto3/data"),
        ("from aws_lambda_powertools.utilities.parameters import DynamoDBProvider", "PARAMETER_SERVICES"),
        ("from aws_lambda_powertools import Tracer", "not known to be client-free"),
        ("from aws_lambda_powertools.utilities.idempotency import idempotent", "not known to be client-free"),
        ("from aws_lambda_powertools.utilities.streaming import S3Object", "not known to be client-free"),
        ("import aws_lambda_powertools.utilities.parameters as p", "from ... import"),
    ],
)
def test_the_guard_refuses_what_it_cannot_read(source: str, problem: str) -> None:
    services, problems = scan_source(source, "m.py")
    assert services == set()
    assert len(problems) == 1
    assert problem in problems[0]
    assert problems[0].startswith("m.py:1: ")


def _client_calls(path: Path) -> set[str]:
    """Services named by ``.client("x")`` / ``.resource("x")`` calls in one Powertools source file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
            continue
        if node.func.attr in {"client", "resource"} and isinstance(node.args[0], ast.Constant):
            found.add(str(node.args[0].value))
    return found


def test_the_powertools_tables_match_the_installed_powertools() -> None:
    # The guard's knowledge of Powertools, checked against the pinned library (same version in .venv as in
    # src/requirements.txt): each provider's module creates that service's client ...
    parameters = importlib.import_module(shipped_clients.POWERTOOLS_PARAMETERS)
    for name, service in shipped_clients.PARAMETER_SERVICES.items():
        source = Path(inspect.getfile(getattr(parameters, name)))
        assert (service in _client_calls(source)) if service else (_client_calls(source) == set()), name
    # ... and the modules it calls client-free create none, anywhere in their packages.
    for module in sorted(shipped_clients.POWERTOOLS_CLIENT_FREE_MODULES):
        path = Path(inspect.getfile(importlib.import_module(module)))
        files = path.parent.rglob("*.py") if path.name == "__init__.py" else [path]
        assert all(_client_calls(f) == set() for f in files), module
    top = importlib.import_module(shipped_clients.POWERTOOLS)
    for name in shipped_clients.POWERTOOLS_CLIENT_FREE_TOP:
        assert getattr(top, name).__module__.startswith(
            ("aws_lambda_powertools.logging", "aws_lambda_powertools.metrics")
        )


# ------------------------------------------------------------------------------------- the built artifact
# Run by the artifact's own interpreter path (PYTHONPATH=<artifact>, no site-packages): the code's own client
# factories create their clients and make one call each; the HTTP send is replaced by canned answers (no
# network), so what is exercised is botocore's loading of the models, endpoint rules, signing and parsing.
PROBE = r"""
import json, sys
import boto3.session, botocore, botocore.httpsession, botocore.session
from botocore.awsrequest import AWSResponse

created, sent = [], []
_create_client = botocore.session.Session.create_client
def create_client(self, service_name, *args, **kwargs):
    created.append(service_name)
    return _create_client(self, service_name, *args, **kwargs)
botocore.session.Session.create_client = create_client

class Raw:
    def __init__(self, body): self.body = body
    def stream(self, **_): yield self.body

def answer(target, request):
    if target == "secretsmanager.GetSecretValue":
        return {"ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:t", "Name": "t", "SecretString": "tok"}
    entries = json.loads(request.body)["Entries"]
    if target == "AmazonSQS.SendMessageBatch":
        ok = [{"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "0"} for e in entries]
        return {"Successful": ok, "Failed": []}
    if target == "AmazonSQS.ChangeMessageVisibilityBatch":
        return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}
    raise AssertionError(target)

def send(self, request):
    target = request.headers["X-Amz-Target"].decode()
    sent.append([request.url, target])
    body = json.dumps(answer(target, request)).encode()
    return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.1"}, Raw(body))
botocore.httpsession.URLLib3Session.send = send

from capi_relay.aws.secrets import FetchBounds, powertools_fetch
from capi_relay.aws.sqs import SqsQueues
from capi_relay.fate.letters import DeadLetter

token = powertools_fetch("t", FetchBounds())()
queues = SqsQueues("us-east-1", 2.0)
failed = queues.send_dead_letters("https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
                                  [DeadLetter(source="m1", body="{}", attributes=(("reason", "x"),))])
parked = queues.change_visibility("arn:aws:sqs:us-east-1:123456789012:q", [("rh", 30)])
print(json.dumps({
    "botocore": botocore.__file__, "token": token, "failed": sorted(failed), "parked": parked,
    "created": created, "sent": sent,
    "available": sorted(botocore.session.Session().get_available_services()),
    "resources": boto3.session.Session().get_available_resources(),
}))
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    saved = os.environ.get("PATH", "/usr/bin:/bin")  # the makefile build needs python3.13 on PATH
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{saved}"
    try:
        result = run_sam(
            "sam", "build", "RelayFunction", "--template-file", str(ROOT / "template.yaml"),
            "--build-dir", str(build_dir), timeout_s=600,
        )  # fmt: skip
    finally:
        os.environ["PATH"] = saved
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build_dir / "RelayFunction"


def run_probe(artifact: Path, home: Path) -> dict[str, object]:
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(artifact), "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_CONFIG_FILE": str(home / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
    }  # fmt: skip
    # -S: no site-packages, so nothing the artifact lacks is found in this venv instead.
    out = subprocess.run(
        [sys.executable, "-S", "-c", PROBE], env=env, cwd=home, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


@pytest.mark.sam
def test_the_built_artifact_creates_and_calls_every_client_with_only_the_kept_models(
    artifact: Path, tmp_path: Path
) -> None:
    result = run_probe(artifact, tmp_path)
    assert str(result["botocore"]).startswith(str(artifact))
    assert result["token"] == "tok"  # Secrets Manager: model, endpoint rules, signing, parsing
    assert result["failed"] == []  # the dead letter was accepted (a failed call fails every letter)
    assert result["parked"] == 1  # ChangeMessageVisibilityBatch parsed
    assert result["created"] == ["secretsmanager", "sqs"]  # the code's own factories, one client each
    assert [url for url, _ in result["sent"]] == [  # type: ignore[attr-defined]
        "https://secretsmanager.us-east-1.amazonaws.com/",
        "https://sqs.us-east-1.amazonaws.com/",
        "https://sqs.us-east-1.amazonaws.com/",
    ]
    assert result["available"] == sorted(set(result["created"]))  # no model the code does not use shipped
    assert result["resources"] == []  # boto3/data pruned
    data = artifact / "botocore" / "data"
    top_level = sorted(p.name for p in data.iterdir() if p.is_file())
    assert top_level == ["_retry.json", "endpoints.json", "partitions.json", "sdk-default-configuration.json"]

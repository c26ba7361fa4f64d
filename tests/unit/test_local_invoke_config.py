"""`sam local invoke --env-vars events/env.json` works against `make local-stack` (local/serve.py): the
file names the secret, ports and variables that the stack creates and the function reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capi_relay.settings import settings_from_env
from local import serve
from local.samples import SAMPLES, load_sample
from tests.sam_cli import run_sam

ROOT = Path(__file__).resolve().parents[2]


def env_vars() -> dict[str, str]:
    doc = json.loads((ROOT / "events" / "env.json").read_text())
    return {k: str(v) for k, v in doc["RelayFunction"].items()}


def test_env_json_matches_the_local_stack() -> None:
    env = env_vars()
    assert env["ACCESS_TOKEN_SECRET_ID"] == f"{serve.PREFIX}/meta-access-token"
    assert env["GRAPH_API_URL"] == f"http://127.0.0.1:{serve.GRAPH_PORT}"
    assert env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{serve.MOTO_PORT}"
    assert env["DLQ_URL"] == f"http://127.0.0.1:{serve.MOTO_PORT}/123456789012/{serve.PREFIX}-dlq"  # stack.provision


def test_env_json_is_valid_relay_configuration() -> None:
    settings = settings_from_env(env_vars())
    assert settings.pixel_id is not None


def test_every_sample_is_a_lambda_sqs_event() -> None:
    for sample in SAMPLES:
        records = load_sample(sample.name)["Records"]
        assert records
        for record in records:
            assert record["eventSource"] == "aws:sqs"
            assert isinstance(record["body"], str)
            assert record["messageId"]


# ------------------------------------------------------------- the environment SAM CLI really builds
# Run with the pinned aws-sam-cli's own interpreter (samcli is not in the project venv): its stack and
# function providers read the template (Globals merged, parameters resolved) and its local-invoke runner
# merges events/env.json exactly as `sam local invoke --env-vars events/env.json` does.
SAM_RESOLVE = """
import json, sys, types
from samcli.commands.local.lib.local_lambda import LocalLambdaRunner
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
template, env_file = sys.argv[1:3]
arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:capi-AbCdEf"
stacks, _ = SamLocalStackProvider.get_stacks(template, parameter_overrides={"AccessTokenSecretArn": arn})
function = SamFunctionProvider(stacks).get("RelayFunction")
overrides = {} if env_file == "-" else json.load(open(env_file))
runner = types.SimpleNamespace(env_vars_values=overrides, get_aws_creds=dict, is_debugging=lambda: False)
resolved = LocalLambdaRunner._make_env_vars(runner, function).resolve()
print(json.dumps({"declared": sorted(function.environment["Variables"]), "resolved": resolved}))
"""


def sam_resolve(env_file: str) -> dict[str, Any]:
    out = run_sam("python", "-c", SAM_RESOLVE, str(ROOT / "template.yaml"), env_file, timeout_s=120)
    assert out.returncode == 0, out.stderr[-2000:]
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


@pytest.mark.sam  # needs the SAM CLI: run by `make lint`, deselected by `make unit`
def test_sam_local_invoke_applies_every_override_in_env_json() -> None:
    # When SAM CLI builds the function's environment from the template and events/env.json
    doc = sam_resolve(str(ROOT / "events" / "env.json"))
    overrides = env_vars()
    # Then every variable the file overrides is declared by the template (SAM ignores undeclared ones) ...
    assert set(overrides) <= set(doc["declared"]), sorted(set(overrides) - set(doc["declared"]))
    # ... and reaches the function with the file's value: the local stand-in and moto, not AWS and Meta
    resolved = doc["resolved"]
    for name, value in overrides.items():
        assert resolved[name] == value, name
    assert resolved["GRAPH_API_URL"].startswith("http://127.0.0.1:")
    assert resolved["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert settings_from_env(resolved).graph_api_url == overrides["GRAPH_API_URL"]


@pytest.mark.sam
def test_without_overrides_the_template_values_mean_production(monkeypatch: pytest.MonkeyPatch) -> None:
    resolved = sam_resolve("-")["resolved"]
    # The declared-but-empty values are unset: production Graph and the real AWS endpoints
    assert resolved["AWS_ENDPOINT_URL"] == ""
    assert resolved["PIXEL_ID"] == ""
    # SAM CLI resolves the Ref of a resource to its logical id (not a URL: settings refuse it); deployed, it
    # is the DLQ's URL, and events/env.json overrides it for sam local invoke.
    assert resolved.pop("DLQ_URL") == "EventsDLQ"
    settings = settings_from_env(resolved)
    assert settings.graph_api_url == "https://graph.facebook.com"
    assert settings.pixel_id is None
    # botocore (the version the artifact pins) treats an empty AWS_ENDPOINT_URL as unset
    import boto3

    for key in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, resolved[key])
    client = boto3.session.Session().client("secretsmanager")
    assert client.meta.endpoint_url == "https://secretsmanager.us-east-1.amazonaws.com"

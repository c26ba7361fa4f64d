"""`sam local invoke --env-vars events/env.json` works against `make local-stack` (local/serve.py): the
file names the secret, ports and variables that the stack creates and the function reads."""

from __future__ import annotations

import json
from pathlib import Path

from capi_relay.settings import settings_from_env
from local import serve
from local.samples import SAMPLES, load_sample

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

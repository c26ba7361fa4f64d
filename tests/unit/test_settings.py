"""Settings are validated once and fail with a message naming the variable."""

from __future__ import annotations

import io
import json
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from bench.cfn import function_properties, load_template
from capi_relay.app import delivery_config
from capi_relay.deliver.engine import DeliveryConfig
from capi_relay.fate.ledger import ParkInput
from capi_relay.quality.config import QualityConfig, quality_config_from_env
from capi_relay.settings import (
    NormalizationSettings,
    Settings,
    SettingsError,
    check_settings_from_env,
    normalization_settings_from_env,
    settings_from_env,
    text,
    variables,
)
from capi_relay.tools import cli

ROOT = Path(__file__).resolve().parents[2]

BASE = {"ACCESS_TOKEN_SECRET_ID": "capi/token", "PIXEL_ID": "1234567890"}


def test_defaults() -> None:
    s = settings_from_env(BASE)
    assert s.graph_api_version == "v26.0"
    assert s.graph_api_url == "https://graph.facebook.com"
    assert s.test_event_code is None
    assert s.normalization.default_phone_region == "US"
    assert s.normalization.date_order == "MDY"
    assert not s.is_production


def test_overrides_are_parsed() -> None:
    env = BASE | {
        "GRAPH_API_VERSION": "v25.0", "GRAPH_API_URL": "http://127.0.0.1:8089/", "TEST_EVENT_CODE": "TEST9",
        "DEFAULT_PHONE_REGION": "gb", "DATE_ORDER": "dmy", "HTTP_CONCURRENCY": "4", "STAGE": "prod",
    }  # fmt: skip
    s = settings_from_env(env)
    assert (s.graph_api_version, s.graph_api_url, s.test_event_code) == ("v25.0", "http://127.0.0.1:8089", "TEST9")
    assert (s.normalization.default_phone_region, s.normalization.date_order) == ("GB", "DMY")
    assert s.http_concurrency == 4
    assert s.is_production


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PIXEL_ID": "1"}, "ACCESS_TOKEN_SECRET_ID"),
        (BASE | {"PIXEL_ID": "abc"}, "PIXEL_ID"),
        (BASE | {"GRAPH_API_VERSION": "26"}, "GRAPH_API_VERSION"),
        (BASE | {"GRAPH_API_VERSION": "v\uff12\uff16.0"}, "GRAPH_API_VERSION"),  # fullwidth (\d matches them)
        (BASE | {"GRAPH_API_VERSION": "v\u0662\u0666.0"}, "GRAPH_API_VERSION"),  # Arabic-Indic digits
        (BASE | {"GRAPH_API_URL": "ftp://x"}, "GRAPH_API_URL"),
        (BASE | {"GRAPH_API_URL": "http://graph.facebook.com"}, "GRAPH_API_URL"),
        (BASE | {"GRAPH_API_URL": "https://graph.facebook.com?access_token=x"}, "GRAPH_API_URL"),
        (BASE | {"DEFAULT_PHONE_REGION": "USA"}, "DEFAULT_PHONE_REGION"),
        (BASE | {"DATE_ORDER": "YMD"}, "DATE_ORDER"),
        (BASE | {"HTTP_CONCURRENCY": "0"}, "HTTP_CONCURRENCY"),
        (BASE | {"HTTP_CONCURRENCY": "many"}, "HTTP_CONCURRENCY"),
        (BASE | {"GRAPH_READ_TIMEOUT": "soon"}, "GRAPH_READ_TIMEOUT"),
        (BASE | {"MAX_EVENTS_PER_REQUEST": "1001"}, "MAX_EVENTS_PER_REQUEST"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        settings_from_env(env)


def test_pixel_is_optional_when_messages_carry_it() -> None:
    assert settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s"}).pixel_id is None


def test_normalization_settings_need_no_aws_configuration() -> None:
    assert normalization_settings_from_env({}).default_phone_region == "US"


@pytest.mark.parametrize("pixel", ["١٢٣", "１２３", "12\u0663", "1²3", "12a", "1 2"])
def test_pixel_id_must_be_ascii_digits(pixel: str) -> None:
    with pytest.raises(SettingsError, match="PIXEL_ID"):
        settings_from_env(BASE | {"PIXEL_ID": pixel})


def test_empty_values_are_unset() -> None:
    env = BASE | {"PIXEL_ID": "", "GRAPH_API_URL": "", "GRAPH_API_VERSION": "", "TEST_EVENT_CODE": "", "STAGE": ""}
    s = settings_from_env(env)
    assert (s.pixel_id, s.graph_api_url, s.graph_api_version, s.test_event_code, s.stage) == (
        None, "https://graph.facebook.com", "v26.0", None, "dev",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FATE_RESERVE": "1", "SQS_TIMEOUT": "2"}, "FATE_RESERVE"),
        ({"DLQ_URL": "not a url"}, "DLQ_URL"),
        ({"PARK_SCHEDULE": "300,abc"}, "PARK_SCHEDULE"),
        ({"SQS_TIMEOUT": "0"}, "SQS_TIMEOUT"),
    ],
)
def test_fate_settings_refuse_bad_values_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        settings_from_env(BASE | env)


def test_fate_settings_read_their_values() -> None:
    s = settings_from_env(BASE | {"FATE_RESERVE": "4", "SQS_TIMEOUT": "1.5", "PARK_SCHEDULE": "off"})
    assert (s.fate_reserve_s, s.sqs_timeout_s) == (4.0, 1.5)
    assert not s.park_schedule_s


# ------------------------------------------------------------------------------ one table (issue 22)
TABLES = (Settings, NormalizationSettings)
NOT_READ = {(Settings, "normalization")}  # a nested table: DEFAULT_PHONE_REGION and DATE_ORDER


def test_every_settings_field_is_read_from_the_table() -> None:
    for cls in TABLES:
        unread = {f.name for f in fields(cls)} - set(variables(cls)) - {name for c, name in NOT_READ if c is cls}
        assert not unread, f"{cls.__name__} fields without a variable: {unread}"


def test_variable_names_are_unique() -> None:
    names = [v.name for cls in TABLES for v in variables(cls).values()]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_settings_read_from_an_empty_environment_are_the_table_defaults() -> None:
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s"})
    for cls, values in ((Settings, settings), (NormalizationSettings, settings.normalization)):
        for f in fields(cls):
            if "env" in f.metadata and f.default is not MISSING:
                assert getattr(values, f.name) == f.default, f.name


def test_components_take_their_defaults_from_the_table() -> None:
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s"})
    # DeliveryConfig's defaults are what app.delivery_config builds from the default settings
    assert DeliveryConfig() == delivery_config(settings)
    park = ParkInput(receive_count=1, now=0.0, invocation_started=0.0)
    assert (park.schedule_s, park.retention_s) == (settings.park_schedule_s, settings.queue_retention_s)
    quality = QualityConfig()
    assert (quality.graph_api_version, quality.graph_api_url, quality.deadline_margin_s, quality.connect_timeout_s,
            quality.secret_max_age_s, quality.service_name, quality.metrics_namespace) == (
        settings.graph_api_version, settings.graph_api_url, settings.deadline_margin_s, settings.connect_timeout_s,
        settings.secret_max_age_s, settings.service_name, settings.metrics_namespace,
    )  # fmt: skip
    check = check_settings_from_env({})
    assert (check.pixel_id, check.test_event_code, check.graph_api_version, check.normalization) == (
        settings.pixel_id, settings.test_event_code, settings.graph_api_version, settings.normalization,
    )  # fmt: skip


def test_every_variable_of_the_relay_function_is_in_the_table() -> None:
    template = load_template(ROOT / "template.yaml")
    table = {v.name for cls in TABLES for v in variables(cls).values()}
    read_elsewhere = {"POWERTOOLS_LOG_LEVEL", "AWS_ENDPOINT_URL"}  # Powertools' and botocore's own
    missing = set(function_properties(template)["Environment"]["Variables"]) - read_elsewhere - table
    assert not missing, missing
    # the reader's own table, the relay's variables it reads, and the Globals' STAGE (every function gets it)
    quality = {v.name for v in variables(QualityConfig).values()} | {"PIXEL_ID", "ACCESS_TOKEN_SECRET_ID", "STAGE"}
    missing = set(function_properties(template, "QualityFunction")["Environment"]["Variables"]) - read_elsewhere
    assert not missing - quality, missing - quality


MALFORMED = "\x01?"  # a control character: only plain text accepts it


def malformed_cases() -> list[tuple[str, str]]:
    """(reader, variable) for every variable whose parser refuses something."""
    cases = [("relay", v.name) for cls in TABLES for v in variables(cls).values() if v.parse is not text]
    cases += [("quality", v.name) for v in variables(QualityConfig).values() if v.parse is not text]
    return cases


@pytest.mark.parametrize(("reader", "name"), malformed_cases())
def test_a_malformed_value_fails_naming_its_variable(reader: str, name: str) -> None:
    read = settings_from_env if reader == "relay" else quality_config_from_env
    with pytest.raises(SettingsError, match=rf"^{name}\b"):
        read(BASE | {name: MALFORMED})


def test_only_free_text_variables_take_any_value() -> None:
    # every other variable is checked (bounds, format, choices): test_a_malformed_value_fails_naming_its_variable
    free = {v.name for cls in (*TABLES, QualityConfig) for v in variables(cls).values() if v.parse is text}
    assert free == {"ACCESS_TOKEN_SECRET_ID", "STAGE", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}


@pytest.mark.parametrize("name", ["PIXEL_ID", "GRAPH_API_VERSION", "DATE_ORDER"])
def test_check_reads_the_relays_variables_as_the_relay_does(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a malformed relay variable in the environment of `capi-relay check`
    monkeypatch.setenv(name, MALFORMED)
    # Then check refuses it as a configuration error naming it, as the relay's cold start would
    assert cli.main(["check", "-"], stdin=io.StringIO("{}"), stdout=io.StringIO()) == 2
    assert f"configuration error: {name}" in capsys.readouterr().err


def test_check_takes_the_default_pixel_as_the_relay_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXEL_ID", " 123 ")  # stripped, as settings_from_env strips it
    body = json.dumps({"data": [{"event_name": "Lead", "event_time": 1_700_000_000, "action_source": "other",
                                 "user_data": {"em": "a@example.com"}}]})  # fmt: skip
    out = io.StringIO()
    cli.main(["check", "-"], stdin=io.StringIO(body), stdout=out)
    assert json.loads(out.getvalue())["pixel_id"] == "123" == settings_from_env(BASE | {"PIXEL_ID": " 123 "}).pixel_id

"""Settings are validated once and fail with a message naming the variable."""

from __future__ import annotations

import pytest

from capi_relay.settings import SettingsError, normalization_settings_from_env, settings_from_env

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

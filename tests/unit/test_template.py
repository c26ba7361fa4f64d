"""template.yaml: what cfn-lint does not catch (wrong spellings, ARNs vs URLs, derived numbers, IAM scope,
the env-var contract with settings.py, alarms on metrics the relay really emits), plus `sam validate --lint`."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from bench.cfn import (
    condition_values,
    function_properties,
    load_template,
    parameter_default,
    resolve_if,
    sqs_event_properties,
)
from capi_relay.settings import DEFAULT_GRAPH_API_VERSION
from local.graph_standin import CHECKED_VERSION
from tests.sam_cli import run_sam

ROOT = Path(__file__).resolve().parents[2]
TELEMETRY_PY = ROOT / "src" / "capi_relay" / "telemetry.py"
QUALITY_DECIDE_PY = ROOT / "src" / "capi_relay" / "quality" / "decide.py"
# The quality reader's alarms exist only with the reader (EnableQualityReader and a pixel): QualityReaderOn.
QUALITY_ALARMS = {"QualityEmqDropAlarm", "QualityKeyCoverageAlarm"}

# The variables settings.py reads (kept here on purpose: a change in settings.py must be mirrored).
SETTINGS_ENV = {
    "PIXEL_ID", "ACCESS_TOKEN_SECRET_ID", "GRAPH_API_VERSION", "GRAPH_API_URL", "TEST_EVENT_CODE",
    "DEFAULT_PHONE_REGION", "DATE_ORDER", "STAGE", "GRAPH_CONNECT_TIMEOUT", "GRAPH_READ_TIMEOUT",
    "HTTP_CONCURRENCY", "MAX_EVENTS_PER_REQUEST", "MAX_REQUEST_BYTES", "SECRET_MAX_AGE", "DEADLINE_MARGIN",
    "MAX_ATTEMPTS", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "DLQ_URL", "MAX_RECEIVE_COUNT",
    "PARK_SCHEDULE", "QUEUE_RETENTION", "FATE_RESERVE", "SQS_TIMEOUT", "SQS_CONCURRENCY", "QUEUE_VISIBILITY_TIMEOUT",
}  # fmt: skip
# What the deployed function must set; the rest keep settings.py's defaults.
REQUIRED_ENV = {"PIXEL_ID", "ACCESS_TOKEN_SECRET_ID", "GRAPH_API_VERSION", "TEST_EVENT_CODE", "STAGE",
                "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}  # fmt: skip
POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}
SDK_ENV = {"AWS_ENDPOINT_URL"}  # read by botocore; declared (empty) so sam local invoke can override it


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def default(template: dict[str, Any], value: Any) -> Any:
    return parameter_default(template, value)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            yield node["Ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def condition_assignments(template: dict[str, Any]) -> Iterator[dict[str, bool]]:
    """The conditions' values for every combination of the parameters they read (each parameter's AllowedValues,
    else empty and non-empty): only assignments a deployment can really have."""
    params = template["Parameters"]
    names = sorted(set(_refs(template.get("Conditions", {}))) & set(params))
    choices = [[str(v) for v in params[n].get("AllowedValues", ["", "x"])] for n in names]
    for values in itertools.product(*choices):
        yield condition_values(template, dict(zip(names, values, strict=True)))


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement in roles and queue policies, under every condition assignment."""
    for conditions in condition_assignments(template):
        for rid, role in resources(template, "AWS::IAM::Role").items():
            for policy in resolve_if(role["Properties"].get("Policies", []), conditions):
                for st in policy["PolicyDocument"]["Statement"]:
                    yield rid, st
        for kind in ("AWS::SQS::QueuePolicy", "AWS::IAM::ManagedPolicy"):
            for rid, policy in resources(template, kind).items():
                for st in resolve_if(policy["Properties"]["PolicyDocument"]["Statement"], conditions):
                    yield rid, st


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------------------ function + event source
def test_function_runtime_architecture_handler_and_code(template: dict[str, Any]) -> None:
    fn = function_properties(template)
    assert fn["Runtime"] == "python3.13"
    assert fn["Architectures"] == ["arm64"]
    assert fn["Handler"] == "capi_relay.handler.lambda_handler"
    assert fn["CodeUri"] == "src/"
    assert template["Resources"]["RelayFunction"]["Metadata"]["BuildMethod"] == "makefile"
    assert "build-RelayFunction:" in (ROOT / "src" / "Makefile").read_text()


def test_partial_batch_response_is_spelt_exactly(template: dict[str, Any]) -> None:
    sqs = sqs_event_properties(template)
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sqs["Queue"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}


def test_batch_size_above_10_has_a_batching_window(template: dict[str, Any]) -> None:
    sqs = sqs_event_properties(template)
    batch, window = default(template, sqs["BatchSize"]), default(template, sqs["MaximumBatchingWindowInSeconds"])
    assert 1 <= batch <= 10_000
    assert batch <= 10 or window >= 1
    # Any allowed parameter value too: either the window cannot be 0 or the batch cannot exceed 10.
    params = template["Parameters"]
    assert params["MaximumBatchingWindowInSeconds"]["MinValue"] >= 1 or params["BatchSize"]["MaxValue"] <= 10
    assert params["MaximumBatchingWindowInSeconds"]["MaxValue"] <= 300
    concurrency = params["MaximumConcurrency"]
    assert 2 <= concurrency["MinValue"] <= concurrency["Default"] <= concurrency["MaxValue"] <= 1000


# ------------------------------------------------------------------------------------------ queues
def test_redrive_targets_the_dlq_arn_not_its_url(template: dict[str, Any]) -> None:
    redrive = template["Resources"]["EventsQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventsDLQ", "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}


def test_max_receive_count_range_and_default(template: dict[str, Any]) -> None:
    p = template["Parameters"]["MaxReceiveCount"]
    assert p["Type"] == "Number"
    assert 1 <= p["MinValue"] <= p["MaxValue"] <= 1000
    assert 5 <= p["Default"] <= p["MaxValue"]


def test_visibility_timeout_is_at_least_six_function_timeouts(template: dict[str, Any]) -> None:
    timeout = default(template, function_properties(template)["Timeout"])
    visibility = default(template, template["Resources"]["EventsQueue"]["Properties"]["VisibilityTimeout"])
    assert isinstance(timeout, int)
    assert isinstance(visibility, int)
    assert visibility >= 6 * timeout
    assert visibility <= 43_200


def test_dlq_keeps_messages_longer_than_the_source_queue(template: dict[str, Any]) -> None:
    dlq = template["Resources"]["EventsDLQ"]["Properties"]
    source = template["Resources"]["EventsQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 1_209_600
    assert dlq["MessageRetentionPeriod"] > source.get("MessageRetentionPeriod", 345_600)
    assert template["Resources"]["EventsDLQ"].get("DeletionPolicy") == "Retain"


@pytest.mark.parametrize("queue", ["EventsQueue", "EventsDLQ"])
def test_both_queues_are_encrypted_whatever_the_kms_parameter(template: dict[str, Any], queue: str) -> None:
    props = template["Resources"][queue]["Properties"]
    for conditions in condition_assignments(template):
        resolved = resolve_if(props, conditions)
        managed = resolved.get("SqsManagedSseEnabled") is True
        kms = resolved.get("KmsMasterKeyId") == {"Ref": "KmsKeyArn"}
        assert managed != kms, f"{queue} under {conditions}: exactly one of SQS-managed SSE / KMS"
        assert kms == conditions["HasKmsKey"]


# ------------------------------------------------------------------------------------------------ IAM
def test_function_uses_the_explicit_role(template: dict[str, Any]) -> None:
    fn = template["Resources"]["RelayFunction"]["Properties"]
    assert fn["Role"] == {"Fn::GetAtt": ["RelayFunctionRole", "Arn"]}
    assert "Policies" not in fn


def test_no_wildcard_resource_for_sqs_or_secrets_actions(template: dict[str, Any]) -> None:
    for rid, st in statements(template):
        if st["Effect"] == "Deny":
            continue  # a Deny is meant to be broad (e.g. every sqs action without TLS)
        actions = as_list(st["Action"])
        assert not any(a in ("*", "sqs:*", "secretsmanager:*", "kms:*") for a in actions), (rid, actions)
        if any(a.startswith(("sqs:", "secretsmanager:", "kms:")) for a in actions):
            for res in as_list(st["Resource"]):
                assert res != "*", (rid, st)
                assert not (isinstance(res, str) and "*" in res), (rid, st)


def test_role_scopes_each_permission_to_one_resource(template: dict[str, Any]) -> None:
    by_action: dict[str, list[Any]] = {}
    for rid, st in statements(template):
        if rid == "RelayFunctionRole":
            assert st["Effect"] == "Allow"
            for action in as_list(st["Action"]):
                by_action.setdefault(action, []).extend(as_list(st["Resource"]))
    queue_arn = {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"):
        assert by_action[action], action
        assert all(r == queue_arn for r in by_action[action]), action
    assert all(r == {"Ref": "AccessTokenSecretArn"} for r in by_action["secretsmanager:GetSecretValue"])
    assert all(r == {"Fn::GetAtt": ["RelayLogGroup", "Arn"]} for r in by_action["logs:PutLogEvents"])
    assert "cloudwatch:PutMetricData" not in by_action  # metrics go out as EMF log lines
    allowed = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility",
               "sqs:SendMessage", "secretsmanager:GetSecretValue", "logs:CreateLogStream", "logs:PutLogEvents",
               "kms:Decrypt", "kms:GenerateDataKey"}  # fmt: skip
    assert set(by_action) <= allowed


def test_kms_decrypt_only_when_a_customer_key_is_configured(template: dict[str, Any]) -> None:
    role = template["Resources"]["RelayFunctionRole"]["Properties"]
    for conditions in condition_assignments(template):
        kms_resources = [
            res
            for policy in resolve_if(role["Policies"], conditions)
            for st in policy["PolicyDocument"]["Statement"]
            if "kms:Decrypt" in as_list(st["Action"])
            for res in as_list(st["Resource"])
        ]
        expected = []
        if conditions["HasKmsKey"]:
            expected.append({"Ref": "KmsKeyArn"})
        if conditions["HasSecretKmsKey"]:
            expected.append({"Ref": "SecretKmsKeyArn"})
        assert kms_resources == expected, conditions


def test_the_relay_may_encrypt_its_letters_exactly_when_the_dlq_has_a_customer_key(template: dict[str, Any]) -> None:
    # The relay sends letters to the DLQ itself (quarantine, last-chance dead letters): with KmsKeyArn the DLQ
    # is encrypted with that key, and SendMessage needs kms:GenerateDataKey through SQS (issue 17).
    role = template["Resources"]["RelayFunctionRole"]["Properties"]
    via_sqs = {"StringEquals": {"kms:ViaService": {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}}}
    for conditions in condition_assignments(template):
        statements = [
            st
            for policy in resolve_if(role["Policies"], conditions)
            for st in policy["PolicyDocument"]["Statement"]
            if "kms:GenerateDataKey" in as_list(st["Action"])
        ]
        if not conditions["HasKmsKey"]:
            assert statements == [], conditions
            continue
        (st,) = statements
        assert st["Effect"] == "Allow"
        assert as_list(st["Action"]) == ["kms:GenerateDataKey"]
        assert st["Resource"] == {"Ref": "KmsKeyArn"}
        assert st["Condition"] == via_sqs
    dlq = template["Resources"]["EventsDLQ"]["Properties"]
    assert dlq["KmsMasterKeyId"] == {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]}


def test_the_relay_knows_the_queues_visibility_timeout(template: dict[str, Any]) -> None:
    env = function_properties(template)["Environment"]["Variables"]
    queue = template["Resources"]["EventsQueue"]["Properties"]
    assert int(env["QUEUE_VISIBILITY_TIMEOUT"]) == queue["VisibilityTimeout"]


def test_queue_policy_lets_only_the_eventbridge_rule_send(template: dict[str, Any]) -> None:
    rule = template["Resources"]["EventsRule"]
    assert rule["Condition"] == "CreateEventBridgeRule"
    assert [t["Arn"] for t in rule["Properties"]["Targets"]] == [{"Fn::GetAtt": ["EventsQueue", "Arn"]}]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern == {"source": [{"Ref": "EventPatternSource"}], "detail-type": [{"Ref": "EventPatternDetailType"}]}
    policies = resources(template, "AWS::SQS::QueuePolicy")
    assert policies
    for conditions in condition_assignments(template):
        allows = [st for qp in policies.values()
                  for st in resolve_if(qp["Properties"]["PolicyDocument"]["Statement"], conditions)
                  if st["Effect"] == "Allow"]  # fmt: skip
        assert len(allows) == (2 if conditions["CreateEventBridgeRule"] else 0), conditions
        for st in allows:
            assert st["Principal"] == {"Service": "events.amazonaws.com"}
            assert as_list(st["Action"]) == ["sqs:SendMessage"]
            assert st["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["EventsRule", "Arn"]}}}


@pytest.mark.parametrize("queue", ["EventsQueue", "EventsDLQ"])
def test_each_queue_denies_every_request_without_tls(template: dict[str, Any], queue: str) -> None:
    # A queue holds one policy: exactly one QueuePolicy per queue, present whatever the parameters.
    [(rid, qp)] = [(k, v) for k, v in resources(template, "AWS::SQS::QueuePolicy").items()
                   if v["Properties"]["Queues"] == [{"Ref": queue}]]  # fmt: skip
    assert "Condition" not in qp, rid
    for conditions in condition_assignments(template):
        denies = [st for st in resolve_if(qp["Properties"]["PolicyDocument"]["Statement"], conditions)
                  if st["Effect"] == "Deny"]  # fmt: skip
        assert denies == [{
            "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "sqs:*",
            "Resource": {"Fn::GetAtt": [queue, "Arn"]}, "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }], conditions  # fmt: skip


def test_producer_policy_sends_to_the_events_queue_only(template: dict[str, Any]) -> None:
    policy = template["Resources"]["ProducerPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert template["Outputs"]["ProducerPolicyArn"]["Value"] == {"Ref": "ProducerPolicy"}
    for conditions in condition_assignments(template):
        found = resolve_if(policy["Properties"]["PolicyDocument"]["Statement"], conditions)
        assert all(st["Effect"] == "Allow" for st in found)
        by_action = {a: st for st in found for a in as_list(st["Action"])}
        expected = {"sqs:SendMessage"} | ({"kms:GenerateDataKey", "kms:Decrypt"} if conditions["HasKmsKey"] else set())
        assert set(by_action) == expected, conditions
        assert by_action["sqs:SendMessage"]["Resource"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
        if conditions["HasKmsKey"]:
            kms = by_action["kms:GenerateDataKey"]
            assert kms["Resource"] == {"Ref": "KmsKeyArn"}
            assert kms["Condition"] == {
                "StringEquals": {"kms:ViaService": {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}}
            }


def test_every_patterned_parameter_says_what_it_wants(template: dict[str, Any]) -> None:
    patterned = {name: p for name, p in template["Parameters"].items() if "AllowedPattern" in p}
    assert {"PixelId", "AccessTokenSecretArn", "GraphApiVersion", "KmsKeyArn", "AlarmEmail"} <= set(patterned)
    for name, param in patterned.items():
        assert len(param.get("ConstraintDescription", "")) > 10, name
        if "Default" in param:
            assert re.fullmatch(param["AllowedPattern"], str(param["Default"])), name
    secret = patterned["AccessTokenSecretArn"]
    assert not re.fullmatch(secret["AllowedPattern"], "SET-ME")  # samconfig's placeholder cannot deploy...
    assert "SET-ME" in secret["ConstraintDescription"]  # ...and the refusal says what to do
    assert re.fullmatch(
        secret["AllowedPattern"], "arn:aws:secretsmanager:eu-west-1:123456789012:secret:capi/token-AbCdEf"
    )


# ------------------------------------------------------------------------------------- environment
def env_names_read_by_settings() -> set[str]:
    """The variables ``settings_from_env`` asks its environment for (a mapping that records every lookup; the
    values given are valid, so every check runs)."""
    from capi_relay.settings import settings_from_env

    read: set[str] = set()

    class Recording(Mapping[str, str]):
        def __init__(self, values: dict[str, str]) -> None:
            self._values = values

        def __getitem__(self, key: str) -> str:
            read.add(key)
            return self._values[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self._values)

        def __len__(self) -> int:
            return len(self._values)

    settings_from_env(Recording({"ACCESS_TOKEN_SECRET_ID": "s"}))
    assert read, "settings_from_env no longer reads its env argument: update this test"
    return read


def test_settings_reads_exactly_the_variables_listed_here() -> None:
    assert env_names_read_by_settings() == SETTINGS_ENV


def test_function_environment_matches_settings(template: dict[str, Any]) -> None:
    variables = set(function_properties(template)["Environment"]["Variables"])
    assert variables - POWERTOOLS_ENV - SDK_ENV <= SETTINGS_ENV, variables - POWERTOOLS_ENV - SDK_ENV - SETTINGS_ENV
    assert variables >= REQUIRED_ENV, REQUIRED_ENV - variables
    env = function_properties(template)["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == "capi-relay"
    assert env["ACCESS_TOKEN_SECRET_ID"] == {"Ref": "AccessTokenSecretArn"}
    # the newest version the Graph stand-in has been checked against with Meta's SDK (test_standin_oracle)
    assert default(template, env["GRAPH_API_VERSION"]) == CHECKED_VERSION == DEFAULT_GRAPH_API_VERSION
    assert default(template, env["TEST_EVENT_CODE"]) == ""
    assert default(template, env["POWERTOOLS_METRICS_NAMESPACE"]) == "CapiRelay"
    assert template["Parameters"]["Stage"]["AllowedValues"] == ["dev", "prod"]


def test_the_settings_accept_the_template_defaults(template: dict[str, Any]) -> None:
    from capi_relay.settings import settings_from_env

    env = {}
    for name, value in function_properties(template)["Environment"]["Variables"].items():
        try:
            env[name] = str(default(template, value))
        except KeyError:
            env[name] = "arn:aws:secretsmanager:us-east-1:123456789012:secret:capi-relay/token-AbCdEf"
        if value == {"Ref": "EventsDLQ"}:  # a queue's Ref is its URL
            env[name] = "https://sqs.us-east-1.amazonaws.com/123456789012/capi-relay-EventsDLQ-AbC"
    settings = settings_from_env(env)
    assert settings.graph_api_version == CHECKED_VERSION
    assert settings.pixel_id is None  # the PixelId default is empty: messages name their pixel
    assert not settings.is_production


def test_env_json_for_sam_local_invoke_matches_the_function(template: dict[str, Any]) -> None:
    import json

    doc = json.loads((ROOT / "events" / "env.json").read_text())
    names = set(doc["RelayFunction"])
    assert names - POWERTOOLS_ENV - {"AWS_ENDPOINT_URL"} <= SETTINGS_ENV
    assert set(function_properties(template)["Environment"]["Variables"]) <= names


# ------------------------------------------------------------------------------------ alarms, metrics
def emitted_metric_names() -> set[str]:
    """Metric names telemetry.py emits (``count("Name", ...)``, ``put_count(metrics, "Name", ...)`` and
    ``add_metric(name="Name", ...)``)."""
    source = TELEMETRY_PY.read_text()
    names = set(re.findall(r'(?:name=|count\(|put_count\(\s*metrics,\s*)"([A-Za-z]+)"', source))
    names |= set(re.findall(r'MetricPoint\(\s*"([A-Za-z]+)"', QUALITY_DECIDE_PY.read_text()))  # the quality reader
    return names


def alarm_metrics(template: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    """Alarm id -> {(namespace, metric name)}; namespace Refs resolved to defaults."""
    out: dict[str, set[tuple[str, str]]] = {}
    for aid, alarm in resources(template, "AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        found = set()
        if "MetricName" in props:
            found.add((default(template, props["Namespace"]), props["MetricName"]))
        for m in props.get("Metrics", []):
            if "MetricStat" in m:
                metric = m["MetricStat"]["Metric"]
                found.add((default(template, metric["Namespace"]), metric["MetricName"]))
        out[aid] = found
    return out


def test_required_alarms_exist(template: dict[str, Any]) -> None:
    alarms = alarm_metrics(template)
    watched = set().union(*alarms.values())
    for needed in [("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
                   ("AWS/Lambda", "Errors"), ("AWS/Lambda", "Throttles"), ("CapiRelay", "AuthFailures"),
                   ("CapiRelay", "EventsRejected"), ("CapiRelay", "EventsPrepared"),
                   ("CapiRelay", "GraphRequestErrors"), ("CapiRelay", "GraphApiVersionRetired")]:  # fmt: skip
        assert needed in watched, needed
    dlq = template["Resources"]["DLQDepthAlarm"]["Properties"]
    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventsDLQ", "QueueName"]}}]
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    age = template["Resources"]["OldestMessageAgeAlarm"]["Properties"]
    assert age["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventsQueue", "QueueName"]}}]
    threshold = template["Parameters"]["OldestMessageAgeThresholdSeconds"]
    assert threshold["Default"] <= threshold["MaxValue"] < 7 * 86_400  # Meta's 7-day limit


def test_custom_metric_alarms_watch_metrics_the_relay_emits(template: dict[str, Any]) -> None:
    emitted = emitted_metric_names()
    assert {"RecordsReceived", "AuthFailures", "EventsRejected", "GraphLatency"} <= emitted
    for aid, found in alarm_metrics(template).items():
        for namespace, name in found:
            if namespace == "CapiRelay":
                assert name in emitted, (aid, name)
                dims = template["Resources"][aid]["Properties"].get("Dimensions")
                if dims is not None and aid not in QUALITY_ALARMS:  # their dimensions: test_quality_* below
                    assert dims == [{"Name": "service", "Value": "capi-relay"}], aid


TOPIC = [{"Ref": "AlarmTopic"}]
# Alarms that fire per new arrival: a notification when they return to OK would double every page.
PER_ARRIVAL = {"DeadLetteredEventsAlarm", "QuarantinedEventsAlarm", "TestEventCodeInProductionAlarm"}


def test_every_alarm_notifies_the_topic_whatever_the_parameters(template: dict[str, Any]) -> None:
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 10
    for conditions in condition_assignments(template):
        for aid, alarm in alarms.items():
            props = resolve_if(alarm["Properties"], conditions)
            # every alarm exists in every deployment, except the quality reader's, which exist with the reader
            assert alarm.get("Condition") == ("QualityReaderOn" if aid in QUALITY_ALARMS else None), aid
            assert props["AlarmActions"] == TOPIC, (aid, conditions)
            assert props.get("OKActions", TOPIC) == TOPIC, (aid, conditions)
            assert ("OKActions" in props) == (aid not in PER_ARRIVAL), aid


def test_the_alarm_topic_always_exists_with_no_key_or_one_cloudwatch_may_use(template: dict[str, Any]) -> None:
    topic = template["Resources"]["AlarmTopic"]
    assert "Condition" not in topic
    key = template["Resources"]["AlarmTopicKey"]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Condition"] == "CreateAlarmTopicKey"
    for kms_key in ("", "arn:aws:kms:us-east-1:123456789012:key/abc"):
        for encryption in ("sns", "kms"):
            conditions = condition_values(template, {"KmsKeyArn": kms_key, "AlarmTopicEncryption": encryption})
            key_id = resolve_if(topic["Properties"], conditions).get("KmsMasterKeyId")
            # never alias/aws/sns: the AWS managed key's policy cannot let CloudWatch publish
            if kms_key:
                assert key_id == {"Ref": "KmsKeyArn"}
            elif encryption == "kms":
                assert key_id == {"Fn::GetAtt": ["AlarmTopicKey", "Arn"]}
            else:
                assert key_id is None  # SNS's own at-rest encryption; no key, no $1 a month
            assert conditions["CreateAlarmTopicKey"] == (not kms_key and encryption == "kms")
    assert template["Parameters"]["AlarmTopicEncryption"]["Default"] == "sns"
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [st for st in statements if st.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(cloudwatch) == 1
    (st,) = cloudwatch
    assert st["Effect"] == "Allow"
    assert set(st["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert st["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert "${AWS::StackName}-*" in st["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    # the account keeps control of its key (a key policy without it cannot be administered)
    admin = [st for st in statements if st.get("Principal", {}).get("AWS", {}).get("Fn::Sub", "").endswith(":root")]
    assert len(admin) == 1
    assert key["Properties"]["EnableKeyRotation"] is True


def test_alarm_email_only_adds_a_subscription(template: dict[str, Any]) -> None:
    subs = resources(template, "AWS::SNS::Subscription")
    assert set(subs) == {"AlarmEmailSubscription"}
    sub = subs["AlarmEmailSubscription"]
    assert sub["Condition"] == "HasAlarmEmail"
    assert sub["Properties"] == {"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email",
                                 "Endpoint": {"Ref": "AlarmEmail"}}  # fmt: skip
    assert "Subscription" not in template["Resources"]["AlarmTopic"]["Properties"]
    output = template["Outputs"]["AlarmTopicArn"]
    assert output["Value"] == {"Ref": "AlarmTopic"}
    assert "Condition" not in output


@pytest.mark.parametrize(
    ("alarm", "metric"),
    [("DeadLetteredEventsAlarm", "EventsDeadLettered"), ("QuarantinedEventsAlarm", "EventsQuarantined")],
)
def test_each_new_dead_lettered_or_quarantined_event_notifies(
    template: dict[str, Any], alarm: str, metric: str
) -> None:
    props = template["Resources"][alarm]["Properties"]
    assert (default(template, props["Namespace"]), props["MetricName"]) == ("CapiRelay", metric)
    assert props["Dimensions"] == [{"Name": "service", "Value": "capi-relay"}]
    assert (props["Statistic"], props["Threshold"], props["ComparisonOperator"]) == ("Sum", 0, "GreaterThanThreshold")
    # one quiet minute returns it to OK, so the next arrival is a new ALARM transition (a new notification)
    assert (props["Period"], props["EvaluationPeriods"]) == (60, 1)
    assert props["TreatMissingData"] == "notBreaching"
    assert props.get("DatapointsToAlarm", 1) == 1


def test_dlq_age_alarm_fires_well_before_sqs_deletes_the_message(template: dict[str, Any]) -> None:
    props = template["Resources"]["DLQOldestMessageAgeAlarm"]["Properties"]
    assert (props["Namespace"], props["MetricName"]) == ("AWS/SQS", "ApproximateAgeOfOldestMessage")
    assert props["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventsDLQ", "QueueName"]}}]
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    dlq_retention = template["Resources"]["EventsDLQ"]["Properties"]["MessageRetentionPeriod"]
    source_retention = template["Resources"]["EventsQueue"]["Properties"]["MessageRetentionPeriod"]
    # The DLQ's age metric counts from the move, expiry from the original send: the worst case leaves
    # dlq_retention - source_retention of DLQ age. Alarm with at least 7 days of that left, and within
    # Meta's 7-day event window in the usual case (moved minutes after being sent).
    worst_case_age_at_deletion = dlq_retention - source_retention
    assert props["Threshold"] + 7 * 86_400 <= worst_case_age_at_deletion
    assert props["Threshold"] < 7 * 86_400
    assert props["Period"] * props["EvaluationPeriods"] <= 3600


def test_resent_events_alarm_watches_a_rate_of_what_meta_accepted(template: dict[str, Any]) -> None:
    props = template["Resources"]["ResentEventRateAlarm"]["Properties"]
    by_id = {m["Id"]: m for m in props["Metrics"]}
    assert by_id["resent"]["MetricStat"]["Metric"]["MetricName"] == "EventsResent"
    assert by_id["accepted"]["MetricStat"]["Metric"]["MetricName"] == "EventsAccepted"
    returned = [m for m in props["Metrics"] if m["ReturnData"]]
    assert [m["Id"] for m in returned] == ["rate"]
    assert "resent" in returned[0]["Expression"]
    assert "accepted" in returned[0]["Expression"]
    assert 0 < props["Threshold"] < 100


def test_dlq_redrive_allow_policy_names_only_the_events_queue(template: dict[str, Any]) -> None:
    policy = template["Resources"]["EventsDLQ"]["Properties"]["RedriveAllowPolicy"]
    assert policy["redrivePermission"] == "byQueue"
    (arn,) = policy["sourceQueueArns"]
    # built from the events queue's name (a GetAtt would make the two queues depend on each other)
    name = template["Resources"]["EventsQueue"]["Properties"]["QueueName"]
    assert name == {"Fn::Sub": "${AWS::StackName}-events"}
    assert arn == {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:" + name["Fn::Sub"]}


def test_dashboard_shows_flow_reasons_latency_and_dlq(template: dict[str, Any]) -> None:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    for metric in ("RecordsReceived", "RecordsDelivered", "RecordsFailed", "GraphLatency",
                   "ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"):  # fmt: skip
        assert f'"{metric}"' in body, metric
    # reasons come from the relay's "reason count" log lines (Logs Insights), not one metric per reason value
    assert not re.search(r"SEARCH\([^)]*(ByReason|ByCode)", body)  # Meta's quality series may be searched
    for metric in ("RecordFailuresByReason", "EventsRejectedByReason", "GraphErrorsByCode",
                   "EventsQuarantinedByReason"):  # fmt: skip
        assert f'metric = \\"{metric}\\"' in body, metric
    assert body.count("SOURCE '${LogGroup}' | filter message = \\\"reason count\\\"") == 4
    assert '"stat": "p50"' in body
    assert '"stat": "p99"' in body
    names_in_body = set(re.findall(r'\["\$\{Ns\}", "([A-Za-z]+)"', body))
    assert names_in_body <= emitted_metric_names()


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    for key in ("EventsQueueUrl", "EventsQueueArn", "EventsDLQUrl", "EventsDLQArn", "RelayFunctionName",
                "DashboardName", "DashboardUrl"):  # fmt: skip
        assert key in outputs, key
    for key in ("DashboardName", "DashboardUrl"):
        assert outputs[key]["Condition"] == template["Resources"]["Dashboard"]["Condition"], key
    assert outputs["EventsDLQArn"]["Value"] == {"Fn::GetAtt": ["EventsDLQ", "Arn"]}


# ------------------------------------------------------------------------------------ build inputs
def test_requirements_pin_what_the_venv_runs() -> None:
    pins = {}
    for raw in (ROOT / "src" / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    assert {"aws-lambda-powertools", "boto3", "urllib3", "phonenumbers"} <= set(pins)
    assert not {"pytest", "awslambdaric", "aws-sam-cli", "moto", "hypothesis"} & set(pins)
    for name, version in pins.items():
        assert metadata.version(name) == version, name


@pytest.mark.sam
def test_sam_validate_lint() -> None:
    # Marked `sam`: `make lint` (which installs the SAM CLI first) runs it; `make unit` deselects it. Never
    # skipped when SAM is missing: run on its own it fails and says how to get the CLI.
    result = run_sam("sam", "validate", "--lint", "--template-file", str(ROOT / "template.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------- quarantine and parking (issue 10)
def test_relay_may_send_to_the_dlq_only_and_change_visibility_on_the_events_queue_only(
    template: dict[str, Any],
) -> None:
    by_action: dict[str, list[Any]] = {}
    for rid, st in statements(template):
        if rid == "RelayFunctionRole":
            for action in as_list(st["Action"]):
                by_action.setdefault(action, []).extend(as_list(st["Resource"]))
    assert by_action["sqs:SendMessage"]
    assert all(r == {"Fn::GetAtt": ["EventsDLQ", "Arn"]} for r in by_action["sqs:SendMessage"])
    assert all(r == {"Fn::GetAtt": ["EventsQueue", "Arn"]} for r in by_action["sqs:ChangeMessageVisibility"])
    assert "sqs:SendMessageBatch" not in by_action  # not an IAM action: SendMessage covers the batch call


def test_function_gets_the_dlq_url_and_the_redrive_count(template: dict[str, Any]) -> None:
    env = function_properties(template)["Environment"]["Variables"]
    assert env["DLQ_URL"] == {"Ref": "EventsDLQ"}  # Ref of a queue is its URL
    assert env["MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}
    queue = template["Resources"]["EventsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert int(env["QUEUE_RETENTION"]) == queue["MessageRetentionPeriod"]


def test_default_parking_outlives_a_six_hour_outage_within_the_retention(template: dict[str, Any]) -> None:
    from capi_relay.settings import settings_from_env

    env = {
        "ACCESS_TOKEN_SECRET_ID": "s",
        "MAX_RECEIVE_COUNT": str(template["Parameters"]["MaxReceiveCount"]["Default"]),
    }
    settings = settings_from_env(env)
    parks = [settings.park_schedule_s[min(n, len(settings.park_schedule_s)) - 1] for n in
             range(1, settings.max_receive_count)]  # fmt: skip
    last_receive_after = sum(parks)  # parks after receives 1 .. MaxReceiveCount-1
    assert last_receive_after > 6 * 3600
    assert last_receive_after + 12 * 3600 < template["Resources"]["EventsQueue"]["Properties"]["MessageRetentionPeriod"]


def test_dashboard_shows_each_events_fate(template: dict[str, Any]) -> None:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    for metric in ("EventsQuarantined", "RecordsParked", "EventsDeadLettered", "EventsResent"):
        assert f'"{metric}"' in body, metric
        assert metric in emitted_metric_names()
    assert 'metric = \\"EventsQuarantinedByReason\\"' in body


# ------------------------------------------------------------------------------------- quality reader
QUALITY_RESOURCES = {"QualityLogGroup", "QualityFunctionRole", "QualityFunction", "QualitySchedulerRole",
                     "QualitySchedule", *QUALITY_ALARMS}  # fmt: skip


def test_quality_reader_ships_in_the_relays_artifact_with_its_own_handler(template: dict[str, Any]) -> None:
    fn = function_properties(template, "QualityFunction")
    assert fn["Handler"] == "capi_relay.quality.handler.lambda_handler"
    assert fn["CodeUri"] == function_properties(template)["CodeUri"] == "src/"
    assert (fn["Runtime"], fn["Architectures"]) == ("python3.13", ["arm64"])
    assert template["Resources"]["QualityFunction"]["Metadata"]["BuildMethod"] == "makefile"
    assert re.search(r"^build-QualityFunction\b.*:", (ROOT / "src" / "Makefile").read_text(), re.MULTILINE)
    assert (ROOT / "src" / "capi_relay" / "quality" / "handler.py").is_file()
    assert fn["Role"] == {"Fn::GetAtt": ["QualityFunctionRole", "Arn"]}
    assert fn["LoggingConfig"] == {"LogGroup": {"Ref": "QualityLogGroup"}}
    env = fn["Environment"]["Variables"]
    assert env["ACCESS_TOKEN_SECRET_ID"] == {"Ref": "AccessTokenSecretArn"}  # the relay's own secret
    assert env["QUALITY_PIXEL_IDS"] == {"Ref": "QualityPixelIds"}
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}


def test_quality_config_accepts_the_template_defaults(template: dict[str, Any]) -> None:
    from capi_relay.quality.config import quality_config_from_env

    env = {name: str(default(template, value)) for name, value in
           function_properties(template, "QualityFunction")["Environment"]["Variables"].items()
           if value != {"Ref": "AccessTokenSecretArn"}}  # fmt: skip
    env["ACCESS_TOKEN_SECRET_ID"] = "arn:aws:secretsmanager:us-east-1:123456789012:secret:capi-relay/token-AbCdEf"
    env["PIXEL_ID"] = "123"  # the reader exists only with a pixel
    config = quality_config_from_env(env)
    assert config.pixel_ids == ("123",)
    assert config.events == (default(template, {"Ref": "QualityEventNames"}),)
    assert ",".join(config.match_keys) == default(template, {"Ref": "QualityMatchKeys"})
    assert config.key_coverage_floor_pct == default(template, {"Ref": "QualityKeyCoverageFloor"})
    assert ",".join(sorted(config.families)) == ",".join(
        sorted(default(template, {"Ref": "QualityMetrics"}).split(","))
    )


def test_quality_reader_is_on_by_default_and_one_parameter_removes_all_of_it(template: dict[str, Any]) -> None:
    assert template["Parameters"]["EnableQualityReader"]["Default"] == "true"
    on = template["Conditions"]["QualityReaderOn"]["Fn::And"]
    assert {"Fn::Equals": [{"Ref": "EnableQualityReader"}, "true"]} in on
    for rid in QUALITY_RESOURCES:
        assert template["Resources"][rid].get("Condition") == "QualityReaderOn", rid
    others = {rid for rid, r in template["Resources"].items() if r.get("Condition") == "QualityReaderOn"}
    assert others == QUALITY_RESOURCES
    assert template["Outputs"]["QualityFunctionName"]["Condition"] == "QualityReaderOn"


def test_quality_schedule_is_hourly_exact_and_invokes_only_the_reader(template: dict[str, Any]) -> None:
    schedule = template["Resources"]["QualitySchedule"]
    assert schedule["Type"] == "AWS::Scheduler::Schedule"
    props = schedule["Properties"]
    assert default(template, props["ScheduleExpression"]) == "rate(1 hour)"
    pattern = template["Parameters"]["QualityScheduleExpression"]["AllowedPattern"]
    for ok in ("rate(1 hour)", "rate(6 hours)", "rate(30 minutes)", "cron(0 * * * ? *)"):
        assert re.fullmatch(pattern, ok), ok
    for bad in ("rate(0 hours)", "every hour", "rate(1 day)"):
        assert not re.fullmatch(pattern, bad), bad
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert props["State"] == "ENABLED"
    target = props["Target"]
    assert target["Arn"] == {"Fn::GetAtt": ["QualityFunction", "Arn"]}
    assert target["RoleArn"] == {"Fn::GetAtt": ["QualitySchedulerRole", "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0
    role = template["Resources"]["QualitySchedulerRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "scheduler.amazonaws.com"}
    (policy,) = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {"Sid": "InvokeQualityReader", "Effect": "Allow", "Action": "lambda:InvokeFunction",
         "Resource": {"Fn::GetAtt": ["QualityFunction", "Arn"]}}
    ]  # fmt: skip


def test_quality_role_reads_the_secret_and_writes_its_own_logs_nothing_else(template: dict[str, Any]) -> None:
    role = template["Resources"]["QualityFunctionRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    for conditions in condition_assignments(template):
        by_action: dict[str, list[Any]] = {}
        for policy in resolve_if(role["Policies"], conditions):
            for st in policy["PolicyDocument"]["Statement"]:
                assert st["Effect"] == "Allow"
                for action in as_list(st["Action"]):
                    by_action.setdefault(action, []).extend(as_list(st["Resource"]))
        expected = {"secretsmanager:GetSecretValue", "logs:CreateLogStream", "logs:PutLogEvents"}
        if conditions["HasSecretKmsKey"]:
            expected.add("kms:Decrypt")
        assert set(by_action) == expected, conditions
        assert by_action["secretsmanager:GetSecretValue"] == [{"Ref": "AccessTokenSecretArn"}]
        assert by_action["logs:PutLogEvents"] == [{"Fn::GetAtt": ["QualityLogGroup", "Arn"]}]
        assert by_action.get("kms:Decrypt", [{"Ref": "SecretKmsKeyArn"}]) == [{"Ref": "SecretKmsKeyArn"}]
    # Metrics are EMF log lines: no cloudwatch:* at all, and no wildcard resource anywhere.
    assert "cloudwatch:" not in str(role)
    assert "'*'" not in str(role)


def test_quality_alarms_notify_the_alarm_topic_and_watch_what_the_reader_publishes(template: dict[str, Any]) -> None:
    from capi_relay.quality import decide

    emq = template["Resources"]["QualityEmqDropAlarm"]["Properties"]
    (stat,) = [m for m in emq["Metrics"] if "MetricStat" in m]
    (expr,) = [m for m in emq["Metrics"] if "Expression" in m]
    metric = stat["MetricStat"]["Metric"]
    assert metric["MetricName"] == "EmqComposite"
    assert [d["Name"] for d in metric["Dimensions"]] == ["service", "pixel", "event_name"]
    assert metric["Dimensions"][0]["Value"] == "capi-relay"
    # The alarm is what quality/decide.py models (and its unit tests exercise).
    assert expr["Expression"] == decide.EMQ_ALARM_EXPRESSION.replace("emq", stat["Id"])
    assert expr["ReturnData"] is True
    assert stat["ReturnData"] is False
    assert stat["MetricStat"]["Period"] == decide.EMQ_ALARM_PERIOD_S
    assert emq["EvaluationPeriods"] == decide.EMQ_ALARM_WINDOW
    assert emq["EvaluationPeriods"] * stat["MetricStat"]["Period"] <= 86_400  # CloudWatch's alarm window limit
    assert emq["DatapointsToAlarm"] == decide.EMQ_ALARM_DATAPOINTS
    assert emq["Threshold"] == {"Ref": "QualityEmqDrop"}
    assert emq["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert emq["TreatMissingData"] == "notBreaching"  # no read (reader off, permission missing) pages no one
    keys = template["Resources"]["QualityKeyCoverageAlarm"]["Properties"]
    assert keys["MetricName"] == "MatchKeysBelowFloor"
    assert keys["Dimensions"] == [{"Name": "service", "Value": "capi-relay"}]
    assert (keys["Threshold"], keys["ComparisonOperator"], keys["DatapointsToAlarm"]) == (0, "GreaterThanThreshold", 2)
    for props in (emq, keys):
        assert props["AlarmActions"] == TOPIC
        assert props["OKActions"] == TOPIC
    # No alarm on QualityReadErrors: a token without the permission is one log line and one metric per read.
    assert "QualityReadErrors" not in str(alarm_metrics(template))


def test_dashboard_shows_meta_quality_beside_the_relays_match_key_metrics(template: dict[str, Any]) -> None:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    for name in ("EmqComposite", "MatchKeyCoverage", "MatchKeysPerEvent", "FieldsDroppedByReason", "EventCoverage",
                 "DedupRate", "DataFreshness", "QualityReadErrors", "MatchKeysBelowFloor"):  # fmt: skip
        assert name in body, name
    import json

    widgets = json.loads(re.sub(r"\$\{[A-Za-z:]+\}", "X", body))["widgets"]
    (coverage,) = [w for w in widgets if "MatchKeyCoverage" in json.dumps(w)]
    assert "MatchKeysPerEvent" in json.dumps(coverage)  # side by side in one widget


def test_env_json_lets_sam_local_invoke_run_the_quality_reader(template: dict[str, Any]) -> None:
    import json

    from capi_relay.quality.config import quality_config_from_env

    doc = json.loads((ROOT / "events" / "env.json").read_text())
    assert set(function_properties(template, "QualityFunction")["Environment"]["Variables"]) <= set(
        doc["QualityFunction"]
    )
    assert quality_config_from_env(doc["QualityFunction"]).pixel_ids == ("1234567890",)


# ------------------------------------------------------------------------- idle cost (issue 21)
def test_every_alarm_is_quiet_without_data_and_rate_alarms_fill_missing_values(template: dict[str, Any]) -> None:
    # The relay publishes no zero (telemetry.put_count): a quiet stack sends no datapoint at all. Every alarm
    # must read that as "nothing happened" (not breaching), and a metric-math alarm must FILL each custom
    # metric with 0, or one missing term (nothing prepared because everything was rejected) leaves no value.
    # The quality EMQ alarm is the exception: an hour without a read is no EMQ at all, and a filled 0 would
    # read as a collapse against the 24-hour mean; missing hours stay missing (not breaching).
    # The version-expiry alarm keeps its state instead ("ignore"): a day without an invocation says nothing about
    # the configured version, and the next invocation's datapoint decides again.
    for aid, alarm in resources(template, "AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        expected = "ignore" if aid == "GraphApiVersionExpiringAlarm" else "notBreaching"
        assert props["TreatMissingData"] == expected, aid
        if aid in QUALITY_ALARMS:
            continue
        ids = [m["Id"] for m in props.get("Metrics", []) if "MetricStat" in m]
        for m in props.get("Metrics", []):
            if "Expression" in m:
                bare = re.sub(r"FILL\((\w+), 0\)", "", m["Expression"])
                for metric_id in ids:
                    assert not re.search(rf"\b{metric_id}\b", bare), (aid, metric_id, m["Expression"])
                    assert f"FILL({metric_id}, 0)" in m["Expression"], (aid, metric_id)


def test_dashboard_is_optional_and_off_by_default(template: dict[str, Any]) -> None:
    dashboard = template["Resources"]["Dashboard"]
    assert dashboard["Condition"] == "CreateDashboardResource"
    assert template["Parameters"]["CreateDashboard"]["Default"] == "false"
    assert not condition_values(template)["CreateDashboardResource"]
    assert condition_values(template, {"CreateDashboard": "true"})["CreateDashboardResource"]


def test_alarms_watch_no_metric_per_reason_value(template: dict[str, Any]) -> None:
    for aid, found in alarm_metrics(template).items():
        for _, name in found:
            assert not name.endswith(("ByReason", "ByCode")), (aid, name)
    for aid, alarm in resources(template, "AWS::CloudWatch::Alarm").items():
        dims = [d["Name"] for d in alarm["Properties"].get("Dimensions", [])]
        assert "reason" not in dims, aid


def test_idle_stack_costs_at_most_three_dollars_a_month_at_the_defaults(template: dict[str, Any]) -> None:
    # README's promise (issue 21), priced by bench.bench_cost from the resources a default deployment creates
    from bench.bench_cost import idle_costs

    items = {item: cost for item, cost, _ in idle_costs(template)}
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert items["CloudWatch alarms"] >= 0.10 * len(alarms)  # every alarm is counted (and kept)
    assert items["CloudWatch custom metrics"] == 0  # nothing is published while nothing happens
    assert items["KMS keys"] == 0
    assert items["CloudWatch dashboards"] == 0
    assert sum(items.values()) <= 3.00, items
    opted_in = {i: c for i, c, _ in idle_costs(template, {"AlarmTopicEncryption": "kms", "CreateDashboard": "true"})}
    assert opted_in["KMS keys"] == 1.00
    assert opted_in["CloudWatch dashboards"] == 3.00


def test_idle_stack_with_a_default_pixel_and_its_quality_reader_stays_under_three_dollars(
    template: dict[str, Any],
) -> None:
    # README's deploy sets PixelId, which also deploys the quality reader: its alarms and its hourly reads are
    # counted, and a read that finds nothing to report publishes nothing.
    from bench.bench_cost import WITH_PIXEL, idle_costs, quality_series

    items = {item: cost for item, cost, _ in idle_costs(template, WITH_PIXEL)}
    relay_alarm_metrics = sum(
        max(1, sum("MetricStat" in m for m in a["Properties"].get("Metrics", [])))
        for aid, a in resources(template, "AWS::CloudWatch::Alarm").items()
        if aid not in QUALITY_ALARMS
    )
    assert items["CloudWatch alarms"] == pytest.approx(0.10 * (relay_alarm_metrics + 2))  # + the 2 quality alarms
    assert 0 < items["Scheduled quality reads"] < 0.10  # 730 reads a month
    assert sum(items.values()) <= 3.00, items
    assert quality_series(template, WITH_PIXEL) == 4  # Purchase: EMQ, email and phone coverage, event coverage
    assert quality_series(template) == 0  # no pixel, no reader
    assert quality_series(template, {**WITH_PIXEL, "EnableQualityReader": "false"}) == 0


def test_the_default_graph_api_version_is_live_at_the_stand_in_and_not_expiring() -> None:
    from datetime import date

    from capi_relay.deliver.versions import WARN_DAYS, days_left
    from local.graph_standin import LIVE_VERSIONS

    assert CHECKED_VERSION in LIVE_VERSIONS
    assert days_left(CHECKED_VERSION, date(2026, 12, 6)) > WARN_DAYS


def test_an_alarm_fires_90_days_before_the_graph_api_version_expires(template: dict[str, Any]) -> None:
    from capi_relay.deliver.versions import WARN_DAYS

    assert "GraphApiVersionDaysLeft" in emitted_metric_names()
    alarm = template["Resources"]["GraphApiVersionExpiringAlarm"]["Properties"]
    assert (alarm["MetricName"], alarm["Statistic"]) == ("GraphApiVersionDaysLeft", "Minimum")
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (WARN_DAYS, "LessThanThreshold")
    assert alarm["Period"] <= 86_400
    assert alarm["AlarmActions"] == TOPIC

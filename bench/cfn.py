"""Read template.yaml without AWS: a YAML loader that tolerates CloudFormation tags, and helpers that
resolve ``!Ref Parameter`` to the parameter's default and merge ``Globals.Function`` into a function.

Used by the template tests, ``bench.bench_cost`` (default memory and batch settings) and
``bench.bench_coldstart`` (the function's environment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML (a cfn-lint dependency in .venv) ships no stubs

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"

_TAGS = ("Ref", "GetAtt", "Sub", "If", "Equals", "Not", "And", "Or", "Join", "Select", "Split", "FindInMap",
         "ImportValue", "GetAZs", "Base64", "Cidr", "Condition", "Transform", "ToJsonString", "Length")  # fmt: skip


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    pass


def _construct(tag: str) -> Any:
    name = "Ref" if tag == "Ref" else ("Condition" if tag == "Condition" else f"Fn::{tag}")

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)  # !GetAtt A.B is ["A", "B"]
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


for _tag in _TAGS:
    _Loader.add_constructor(f"!{_tag}", _construct(_tag))


def load_template(path: str | Path = TEMPLATE) -> dict[str, Any]:
    """The template as plain data: ``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``."""
    with open(path, encoding="utf-8") as fh:
        doc = yaml.load(fh, Loader=_Loader)  # a SafeLoader subclass
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return doc


def parameter_default(template: dict[str, Any], value: Any) -> Any:
    """``{"Ref": "Param"}`` -> the parameter's Default (as declared); any other value unchanged."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        name = value["Ref"]
        params = template.get("Parameters", {})
        if name in params:
            if "Default" not in params[name]:
                raise KeyError(f"parameter {name} has no Default")
            return params[name]["Default"]
    return value


def function_properties(template: dict[str, Any], logical_id: str = "RelayFunction") -> dict[str, Any]:
    """The function's Properties with ``Globals.Function`` merged in (environment variables merged too)."""
    merged: dict[str, Any] = dict(template.get("Globals", {}).get("Function", {}))
    own = template["Resources"][logical_id]["Properties"]
    global_env = merged.get("Environment", {}).get("Variables", {})
    merged.update(own)
    own_env = own.get("Environment", {}).get("Variables", {})
    merged["Environment"] = {"Variables": {**global_env, **own_env}}
    return merged


def sqs_event_properties(template: dict[str, Any], logical_id: str = "RelayFunction") -> dict[str, Any]:
    """Properties of the function's (single) SQS event source."""
    events = template["Resources"][logical_id]["Properties"].get("Events", {})
    sqs = [e["Properties"] for e in events.values() if e.get("Type") == "SQS"]
    if len(sqs) != 1:
        raise ValueError(f"expected one SQS event on {logical_id}, found {len(sqs)}")
    props: dict[str, Any] = sqs[0]
    return props


def default_sizing(template: dict[str, Any] | None = None) -> dict[str, int]:
    """MemorySize, Timeout, BatchSize, MaximumBatchingWindowInSeconds, MaximumConcurrency with defaults."""
    template = template if template is not None else load_template()
    fn = function_properties(template)
    sqs = sqs_event_properties(template)
    return {
        "MemorySize": int(parameter_default(template, fn["MemorySize"])),
        "Timeout": int(parameter_default(template, fn["Timeout"])),
        "BatchSize": int(parameter_default(template, sqs["BatchSize"])),
        "MaximumBatchingWindowInSeconds": int(parameter_default(template, sqs["MaximumBatchingWindowInSeconds"])),
        "MaximumConcurrency": int(parameter_default(template, sqs["ScalingConfig"]["MaximumConcurrency"])),
    }


# ------------------------------------------------------------------------------------ conditions
def parameter_values(template: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter's value: its Default (None when it has none), then ``overrides``."""
    values = {name: p.get("Default") for name, p in template.get("Parameters", {}).items()}
    values.update(overrides or {})
    return values


def _evaluate(template: dict[str, Any], node: Any, params: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    if isinstance(node, dict) and len(node) == 1:
        ((fn, arg),) = node.items()
        if fn == "Ref":
            return params.get(arg, arg)
        if fn == "Condition":
            if arg in seen:
                raise ValueError(f"condition cycle through {arg}")
            return _evaluate(template, template["Conditions"][arg], params, (*seen, arg))
        if fn == "Fn::Equals":
            left, right = (_evaluate(template, a, params, seen) for a in arg)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not _evaluate(template, arg[0], params, seen)
        if fn == "Fn::And":
            return all(_evaluate(template, a, params, seen) for a in arg)
        if fn == "Fn::Or":
            return any(_evaluate(template, a, params, seen) for a in arg)
    return node


def condition_values(template: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, bool]:
    """Each condition of the template evaluated with the parameters' defaults and ``overrides``."""
    params = parameter_values(template, overrides)
    return {name: bool(_evaluate(template, {"Condition": name}, params)) for name in template.get("Conditions", {})}


def resolve_if(value: Any, conditions: dict[str, bool]) -> Any:
    """Evaluate Fn::If under ``conditions``; AWS::NoValue (and list items that are) disappear as None."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return resolve_if(when_true if conditions[name] else when_false, conditions)
        if value == {"Ref": "AWS::NoValue"}:
            return None
        return {k: r for k, r in ((k, resolve_if(v, conditions)) for k, v in value.items()) if r is not None}
    if isinstance(value, list):
        return [r for r in (resolve_if(v, conditions) for v in value) if r is not None]
    return value


def deployed_resources(template: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The resources a deployment with these parameters creates (their Condition true), Fn::If resolved."""
    conditions = condition_values(template, overrides)
    out = {}
    for rid, resource in template.get("Resources", {}).items():
        if conditions.get(resource.get("Condition", ""), True):
            out[rid] = resolve_if(resource, conditions)
    return out

"""The stand-in's model of Meta's Dataset Quality API: ``GET /{version}/dataset_quality``.

As Meta documents it (developers.facebook.com/docs/marketing-api/conversions-api/dataset-quality-api and
its "for Offline Events" page; the documented example responses are in tests/data/dataset_quality_examples.json
and tests/integration/test_quality_standin.py asserts this model answers each documented request with the
documented shape):

* parameters ``dataset_id`` (required), ``fields`` (Graph field expansion, ``web{...}``), ``agent_name``
  (optional filter; the stand-in accepts and ignores it), ``access_token`` (or the Authorization header);
* the answer is ``{"web": [one object per event name]}`` holding only the requested fields, nested as
  requested; an object field requested without ``{...}`` answers its default fields (``event_match_quality``
  alone answers ``composite_score`` and ``match_key_feedback`` with ``identifier`` and ``coverage``, as in
  Meta's first example); a field Meta's data lacks for an event is left out (Graph omits empty fields);
* errors: a token whose user lacks the dataset permission -> code 10 (Meta's error table: "The application
  doesn't have permission for this action"); an unknown dataset -> code 2044055 (Meta's table: "The
  dataset_id that was inputted doesn't exist"; Meta calls it an error code, so it is the ``code`` here);
  no ``dataset_id`` -> code 100; a field no node has -> code 100 "Tried accessing nonexisting field"
  (Graph's usual answer); the nested path ``/{id}/dataset_quality`` -> code 2500 "Unknown path components";
  throttling and delays come from the stand-in's faults like every Graph answer.

Not documented, so chosen here (and said so in docs/quality.md): the default fields when ``fields`` is
absent (``web{event_name,event_match_quality}``), the node type names Meta would put in a nonexisting-field
message other than the documented ones, and that Meta answers both spellings ``dedupe_key_feedback`` (its
examples) and ``dedup_key_feedback`` (its field table); ``removed_fields`` lets a test make one of them
nonexisting (a third party reports v25 dropped the dedup field).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

QUALITY_PATH_RE = re.compile(r"^/(v\d+\.\d+)/dataset_quality$")
NESTED_PATH_RE = re.compile(r"^/(v\d+\.\d+)/(\d+)/dataset_quality$")
EXAMPLES_FILE = Path(__file__).resolve().parent.parent / "tests" / "data" / "dataset_quality_examples.json"
CODE_UNKNOWN_DATASET = 2044055

# node type -> {field: child node type or None for a scalar}; names Meta documents where it does.
SCHEMA: dict[str, dict[str, str | None]] = {
    "DatasetQuality": {"web": "AdsDatasetQualityWebEvent"},
    "AdsDatasetQualityWebEvent": {
        "event_name": None, "event_match_quality": "AdsPixelCAPIEMQ",
        "event_potential_aly_acr_increase": "AdsPixelCAPIEventALYACR", "acr": "AdsDatasetCAPIACR",
        "event_coverage": "AdsDatasetEventCoverage", "dedupe_key_feedback": "AdsDatasetDedupKeyFeedback",
        "dedup_key_feedback": "AdsDatasetDedupKeyFeedback", "data_freshness": "AdsDatasetDataFreshness",
    },
    "AdsPixelCAPIEMQ": {"composite_score": None, "match_key_feedback": "MatchKeyFeedback", "diagnostics": "Diagnostic"},
    "MatchKeyFeedback": {"identifier": None, "coverage": "Coverage", "potential_aly_acr_increase": "Percentage"},
    "Coverage": {"percentage": None},
    "Percentage": {"percentage": None, "description": None},
    "AdsPixelCAPIEventALYACR": {"percentage": None, "description": None},
    "AdsDatasetCAPIACR": {"percentage": None, "description": None},
    "Diagnostic": {"name": None, "description": None, "solution": None, "percentage": None,
                   "affected_event_count": None, "total_event_count": None},
    "AdsDatasetEventCoverage": {"percentage": None, "goal_percentage": None, "description": None,
                                "potential_aly_acr_increase": "Percentage"},
    "AdsDatasetDedupKeyFeedback": {"dedupe_key": None, "browser_events_with_dedupe_key": "Percentage",
                                   "server_events_with_dedupe_key": "Percentage",
                                   "overall_browser_coverage_from_dedupe_key": "Percentage"},
    "AdsDatasetDataFreshness": {"upload_frequency": None, "description": None},
}  # fmt: skip
DEFAULTS: dict[str, tuple[str, ...]] = {
    "DatasetQuality": ("web",),
    "AdsDatasetQualityWebEvent": ("event_name", "event_match_quality"),
    "AdsPixelCAPIEMQ": ("composite_score", "match_key_feedback"),
    "MatchKeyFeedback": ("identifier", "coverage"),
    "Coverage": ("percentage",),
    "AdsDatasetEventCoverage": ("percentage", "goal_percentage", "description"),
}
STORED_AS = {"dedup_key_feedback": "dedupe_key_feedback"}  # one spelling in the data, both answered

Selection = list[tuple[str, "Selection | None"]]


class FieldsError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse_fields(text: str) -> Selection:
    """Graph field expansion: ``a,b{c,d{e}}`` -> [("a", None), ("b", [("c", None), ("d", [("e", None)])])]."""
    pos = 0

    def selection(depth: int) -> Selection:
        nonlocal pos
        out: Selection = []
        while True:
            match = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*").match(text, pos)
            if match is None:
                raise FieldsError(f'Syntax error "Expected field name" at character {pos}: {text}')
            pos = match.end()
            sub: Selection | None = None
            if pos < len(text) and text[pos] == "{":
                pos += 1
                sub = selection(depth + 1)
                if pos >= len(text) or text[pos] != "}":
                    raise FieldsError(f'Syntax error "Expected "}}"" at character {pos}: {text}')
                pos += 1
            out.append((match.group(1), sub))
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if depth == 0 and pos != len(text):
                raise FieldsError(f'Syntax error "Expected end of string" at character {pos}: {text}')
            return out

    return selection(0)


def project(value: Any, node_type: str, selection: Selection | None, removed: set[str]) -> Any:
    """The stored value cut down to ``selection`` (None: the node's default fields)."""
    if isinstance(value, list):
        return [project(item, node_type, selection, removed) for item in value]
    if not isinstance(value, dict):
        return value
    fields = SCHEMA[node_type]
    chosen = selection if selection is not None else [(f, None) for f in DEFAULTS.get(node_type, tuple(fields))]
    out: dict[str, Any] = {}
    for name, sub in chosen:
        if name not in fields or name in removed:
            raise FieldsError(f"(#100) Tried accessing nonexisting field ({name}) on node type ({node_type})")
        child = fields[name]
        if child is None and sub is not None:
            raise FieldsError(f"(#100) Field {name} on node type ({node_type}) is not an object")
        stored = value.get(STORED_AS.get(name, name))
        if stored is None:
            continue
        out[name] = project(stored, child, sub, removed) if child is not None else stored
    return out


def _merge(into: Any, new: Any) -> Any:
    """Deep-merge documented example answers: objects by key; lists of objects by their identifying key."""
    if isinstance(into, dict) and isinstance(new, dict):
        for key, value in new.items():
            into[key] = _merge(into[key], value) if key in into else copy.deepcopy(value)
        return into
    if isinstance(into, list) and isinstance(new, list):
        for item in new:
            ident = next((item[k] for k in ("event_name", "identifier", "dedupe_key", "name") if k in item), None)
            match = next((old for old in into if ident is not None and ident in old.values()), None)
            if match is None:
                into.append(copy.deepcopy(item))
            else:
                _merge(match, item)
        return into
    return copy.deepcopy(new)


def documented_dataset() -> list[dict[str, Any]]:
    """Every documented example answer merged into one dataset (one entry per event name)."""
    doc = json.loads(EXAMPLES_FILE.read_text(encoding="utf-8"))
    merged: list[dict[str, Any]] = []
    for example in doc["examples"]:
        _merge(merged, example["response"]["web"])
    return merged


def answer(params: dict[str, str], dataset: list[dict[str, Any]] | None, removed: set[str]) -> tuple[int, Any]:
    """(status, body) for an authorized request. ``dataset`` None: Meta knows no such dataset."""
    from local.graph_standin import meta_error  # imported here: graph_standin imports this module

    dataset_id = params.get("dataset_id")
    if not dataset_id:
        return 400, meta_error(100, "(#100) The parameter dataset_id is required")
    if dataset is None or not dataset_id.isdigit():
        return 400, meta_error(CODE_UNKNOWN_DATASET, "The dataset_id that was inputted doesn't exist.")
    try:
        selection = parse_fields(params["fields"]) if params.get("fields") else None
        return 200, project({"web": dataset}, "DatasetQuality", selection, removed)
    except FieldsError as exc:
        return 400, meta_error(100, exc.message)

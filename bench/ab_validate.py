"""A/B benchmark of event validation and encoding alone: another revision's ``src/`` against this tree's.

    python -m bench.ab_validate --old-rev HEAD~1 [--rounds 4] [--records 10000]

Steps of well under a microsecond vanish in ab_relay's ``rest`` (~23 µs/event, ±3 % between runs on a shared
machine). This times only what ``prepare/events.py`` and ``ingest/model.py`` do per event: ``resolve_identity``
then ``prepare_event`` (validation, encoding) over bench_pipeline's generated purchases (shape ``single``:
``event_source_url``, ``custom_data`` with value/currency/content_ids/num_items) with ``normalize_user_data``
replaced by a copy of ``user_data`` as in ab_relay's ``rest``. Same rounds as ab_relay (fresh interpreters,
alternating which side goes first); CPU per event, the fastest of five passes after a warm-up. Prints numbers;
asserts nothing.
"""

from __future__ import annotations

import sys

from bench.ab_relay import main as ab_main

CHILD = """
import gc, json, time
from bench.bench_pipeline import sqs_event
from capi_relay.ingest.model import Prepared
from capi_relay.prepare import events as validate
from capi_relay.settings import NormalizationSettings

validate.normalize_user_data = lambda ud, s, t, n: (dict(ud), [])
settings = NormalizationSettings()
now = int(time.time())
raws = [json.loads(record["body"]) for record in sqs_event({records}, 11, "single", now)["Records"]]
out = {{"module": validate.__file__}}


def one_pass():
    for raw in raws:
        identity = validate.resolve_identity("1234567890", raw, now)
        result = validate.prepare_event(raw, settings, now, default_event_time=identity.default_event_time)
        assert type(result) is Prepared, result


one_pass()
best = float("inf")
for _ in range(5):
    gc.collect()
    cpu = time.process_time()
    one_pass()
    best = min(best, time.process_time() - cpu)
out["validate+encode"] = best / {records} * 1e6
print(json.dumps(out))
"""

if __name__ == "__main__":
    raise SystemExit(ab_main(sys.argv[1:], CHILD, "python -m bench.ab_validate", __doc__.splitlines()[0]))

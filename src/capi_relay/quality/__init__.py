"""Meta's own view of match quality: the Dataset Quality API (formerly Integration Quality API), read on a
schedule (``handler``), parsed (``dataset_quality``), turned into a bounded set of metrics and decisions
(``decide``) and published as EMF (``publish``); ``capi-relay quality`` (``cli``) prints it beside the
relay's own match-key coverage for a sample of messages. See docs/quality.md."""

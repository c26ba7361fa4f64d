"""capi-relay: SQS -> Lambda -> Meta Conversions API relay."""

__version__ = "0.2.0"  # the one version source: pyproject reads it, the User-Agent sends it

from capi_relay.compiled import guard as _guard

_guard()  # a compiled core that cannot load falls back to the .py modules (capi_relay/compiled.py)

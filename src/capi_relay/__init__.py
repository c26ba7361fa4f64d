"""capi-relay: SQS -> Lambda -> Meta Conversions API relay."""

__version__ = "0.2.0"  # the one version source: pyproject reads it, the User-Agent sends it

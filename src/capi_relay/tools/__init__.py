"""Operator tools behind the `capi-relay` console script (check, send, dlq, quality, preflight, explain).
Not part of the Lambda artifact.
"""

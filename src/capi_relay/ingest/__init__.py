"""Ingest: an SQS record becomes messages and raw events (envelope), and the event types every later stage shares
(model).
"""

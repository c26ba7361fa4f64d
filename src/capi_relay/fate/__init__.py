"""Fate: what becomes of each (record, event) after delivery -- the ledger and the quarantine/park decision
(ledger), the dead letters (letters).
"""

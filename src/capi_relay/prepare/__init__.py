"""Prepare: one raw event becomes a prepared event or a rejection -- the event rules (events), the per-field
normalization and hashing (normalize) and the generated tables they read (_tables).
"""

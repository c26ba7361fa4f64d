"""AWS I/O: the relay's own SQS calls (letters, parking) and the access token from Secrets Manager, each behind a
small interface app.py chooses.
"""

"""Deliver: prepared events become Graph API requests -- the engine (chunking, attempts, deadlines), Meta's error
classification (policy), the HTTP client (client), throttle holds, the bad-event search and the Graph API
version calendar.
"""

"""Outgoing email: one stored message per event, sent by a worker over SMTP or to ``var/mail``."""

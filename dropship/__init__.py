"""The composition root: the ``dropship`` command and the ASGI entry point put the API
(``app``) and the workers (``workers``) together. Dependencies run one way:
``dropship`` > ``workers`` > ``app`` > ``connectors``."""

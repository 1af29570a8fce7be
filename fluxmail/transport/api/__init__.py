"""HTTP API transports: one module a provider (``resend.py``, ``sendgrid.py``, ...) exporting
``TRANSPORT``, a subclass of :class:`fluxmail.transport.api.base.ApiTransport`, which runs the
one send template (outcomes, retries, idempotency); ``client.py`` holds the one HTTP client."""

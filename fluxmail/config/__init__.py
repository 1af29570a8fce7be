"""The configuration layer: settings and their sources, URL and host forms, the provider catalog,
the TLS policy. Imports only the message layer and the base modules."""

"""The ``failover`` and ``roundrobin`` transports: several members behind one transport.

``rules.py`` holds the one rule (may this message go to the next member?), ``breaker.py`` the
cool-down of a failing member, ``transport.py`` the transport and its bulk lanes.
"""

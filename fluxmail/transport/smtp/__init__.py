"""SMTP: sessions, pipelining, pooled connections and the retry loop."""

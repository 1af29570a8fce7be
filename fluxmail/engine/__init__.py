"""The engine: runs sends (one or a bulk pipeline) through the audit steps and a transport."""

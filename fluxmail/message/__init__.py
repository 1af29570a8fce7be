"""The message layer: addresses, headers, attachments and the MIME writer.

Imports nothing above it."""

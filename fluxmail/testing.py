"""Test helpers for code that sends mail: the ``memory`` backend's outbox.

Set ``FLUXMAIL_TYPE=memory`` (or ``FluxMail(object_type="memory")``) in your tests, run your code,
then assert on ``fluxmail.testing.outbox``::

    from fluxmail.testing import outbox

    def test_welcome_mail():
        outbox.clear()
        signup("ada@example.com")
        (mail,) = outbox.find(to="ada@example.com")
        assert mail.subject == "Welcome"
"""

from fluxmail.transport.memory import Outbox, SentMessage, outbox

__all__ = ["Outbox", "SentMessage", "outbox"]

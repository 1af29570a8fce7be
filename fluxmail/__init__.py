"""fluxmail: a twelve-factor mailer SDK."""

"""OAuth 2.0 access tokens for SMTP's XOAUTH2 and OAUTHBEARER logins (``tokens``)."""

"""MailRaven: a durable, hardened mail server on Twisted."""

__version__ = "0.1.0"

"""IMAP4rev1 (RFC 3501) on twisted.mail.imap4, hardened: see L{server}."""

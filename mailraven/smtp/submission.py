"""Submission listeners (587/465). Until AUTH lands (the submission issue) they
speak ESMTP and refuse every transaction: mail is never accepted unauthenticated
here, and clients get a clear 530 rather than a closed port."""

from __future__ import annotations

from mailraven.smtp.server import MailRavenESMTP, MailRavenSMTPFactory, Reply


class SubmissionESMTP(MailRavenESMTP):
    def smtp_MAIL(self, argument: str) -> None:
        raise Reply(530, "5.7.0", "Authentication required", "auth_required")


class SubmissionSMTPFactory(MailRavenSMTPFactory):
    protocol = SubmissionESMTP

"""twistd plugin: `twistd -n mailraven`. Imports MailRaven only when used."""

from twisted.application.service import ServiceMaker

mailraven = ServiceMaker(
    "MailRaven",
    "mailraven.tap",
    "MailRaven mail server: SMTP, mobile JSON API, durable store",
    "mailraven",
)

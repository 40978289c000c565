"""The OpenAPI 3 document of the mobile API, served at /api/v1/openapi.json.

tests/test_mobile_api.py checks that it names exactly the routes the server
has, and schemathesis drives the running server from it.
"""

from __future__ import annotations

from typing import Any

from mailraven import __version__
from mailraven.store.messages import MAILBOXES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "Bad parameters or body",
        401: "No valid bearer token",
        404: "No such message or folder (or another user's)",
        409: "The folder exists, may not change, or the account has 1000",
        413: "Body too large",
        429: "Rate limited (Retry-After)",
        503: "A local recipient's mailbox is full (docs/quotas.md)",
    }
    return {str(code): _json(_ERROR, texts[code]) for code in codes}


def _intParam(name: str, low: int, high: int, default: int) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {
            "type": "integer",
            "minimum": low,
            "maximum": high,
            "default": default,
        },
    }


# a folder key: one of the six standard names or a user folder's folder-<n>
MAILBOX = {
    "type": "string",
    "pattern": "^(" + "|".join(MAILBOXES) + "|folder-[0-9]{1,19})$",
}
_KEY = {"name": "key", "in": "path", "required": True, "schema": MAILBOX}
_ID = {"name": "entryId", "in": "path", "required": True, "schema": {"type": "string"}}
_AUTH = [{"bearer": []}]
_STD = (400, 401, 429)

SUMMARY_FIELDS: dict[str, Any] = {
    "id": {"type": "string"},
    "sender": {"type": "string"},
    "recipient": {"type": "string"},
    "tag": {"type": "string"},
    "subject": {"type": "string"},
    "snippet": {"type": "string", "maxLength": 200},
    "read_state": {"type": "boolean"},
    "starred": {"type": "boolean"},
    "received_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
    "spf_result": {
        "type": "string",
        "enum": [
            "pass",
            "fail",
            "softfail",
            "neutral",
            "none",
            "temperror",
            "permerror",
        ],
    },
    "dkim_result": {"type": "string", "enum": ["pass", "fail", "none"]},
    "dmarc_result": {"type": "string", "enum": ["pass", "fail", "none"]},
    "mailbox": {"type": "string"},
    "spam_score": {"type": "number"},
    "has_attachments": {"type": "boolean"},
    "size": {"type": "integer"},
}


def document() -> dict[str, Any]:
    summary = {
        "type": "object",
        "properties": SUMMARY_FIELDS,
        "required": sorted(SUMMARY_FIELDS),
    }
    ref = {"$ref": "#/components/schemas/MessageSummary"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "MailRaven mobile API", "version": __version__},
        "servers": [{"url": "/api"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "OutboundStatus": {
                    "type": "object",
                    "required": ["id", "status", "queued_at", "recipients"],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {
                            "type": "string",
                            "enum": ["queued", "deferred", "delivered", "failed"],
                        },
                        "queued_at": {"type": "string"},
                        "recipients": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "address": {"type": "string"},
                                    "status": {"type": "string"},
                                    "attempts": {"type": "integer"},
                                    "last_reply": {"type": ["string", "null"]},
                                    "next_attempt_at": {"type": ["string", "null"]},
                                    "updated_at": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Folder": FOLDER,
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "retry_after": {"type": "integer"},
                    },
                },
                "MessageSummary": summary,
                "MessageFull": {
                    "allOf": [
                        ref,
                        {
                            "type": "object",
                            "properties": {
                                "message_id": {"type": "string"},
                                "body": {"type": "string"},
                                "body_size": {"type": "integer"},
                                "headers": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "name": {"type": "string"},
                                            "value": {"type": "string"},
                                        },
                                    },
                                },
                                "text": {"type": "string"},
                                "html": {"type": "string"},
                                "attachments": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "filename": {"type": "string"},
                                            "content_type": {"type": "string"},
                                            "size": {"type": "integer"},
                                        },
                                    },
                                },
                            },
                        },
                    ]
                },
                "SearchResult": {
                    "allOf": [
                        ref,
                        {
                            "type": "object",
                            "properties": {
                                "relevance": {
                                    "description": "with sort=relevance only",
                                    "type": "number",
                                    "minimum": 0,
                                    "maximum": 1,
                                }
                            },
                        },
                    ]
                },
            },
        },
        "paths": {
            "/v1/auth/login": {
                "post": {
                    "summary": "Exchange email and password for a 7-day bearer token",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["email", "password"],
                                    "properties": {
                                        "email": {"type": "string"},
                                        "password": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "token": {"type": "string"},
                                    "email": {"type": "string"},
                                    "expires_at": {
                                        "type": "string",
                                        "format": "date-time",
                                    },
                                },
                            }
                        ),
                        **_errors(400, 401, 413, 429),
                    },
                }
            },
            "/v1/auth/logout": {
                "post": {
                    "summary": "Revoke the bearer token used",
                    "security": _AUTH,
                    "responses": {
                        "200": _json({"type": "object"}),
                        **_errors(401, 429),
                    },
                }
            },
            "/v1/messages": {
                "get": {
                    "summary": "Newest first; page with offset or the opaque cursor",
                    "security": _AUTH,
                    "parameters": [
                        _intParam("limit", 1, 1000, 20),
                        _intParam("offset", 0, 10**9, 0),
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "unread_only",
                            "in": "query",
                            "schema": {"type": "boolean"},
                        },
                        {"name": "mailbox", "in": "query", "schema": MAILBOX},
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "messages": {"type": "array", "items": ref},
                                    "total": {"type": "integer"},
                                    "limit": {"type": "integer"},
                                    "offset": {"type": "integer"},
                                    "has_more": {"type": "boolean"},
                                    "next_cursor": {"type": "string", "nullable": True},
                                },
                            }
                        ),
                        **_errors(*_STD, 404),
                    },
                }
            },
            "/v1/messages/since": {
                "get": {
                    "summary": "Delta sync: entries that arrived or changed after"
                    " `since`"
                    " (read state, star, mailbox; a delete is a move to"
                    " trash), and entries gone (expunged over IMAP, or with a"
                    " deleted folder), oldest change first; continue from"
                    " next_since",
                    "security": _AUTH,
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        _intParam("limit", 1, 1000, 100),
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "messages": {"type": "array", "items": ref},
                                    "expunged": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": [
                                                "id",
                                                "mailbox",
                                                "expunged_at",
                                            ],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "mailbox": {"type": "string"},
                                                "expunged_at": {"type": "string"},
                                            },
                                        },
                                    },
                                    "count": {"type": "integer"},
                                    "since": {"type": "string"},
                                    "next_since": {"type": "string"},
                                },
                            }
                        ),
                        **_errors(*_STD),
                    },
                }
            },
            "/v1/events": {
                "get": {
                    "summary": "Server-sent events (text/event-stream): `ready`"
                    " with the current cursor, then `changes` with the body of"
                    " /messages/since for each change, `id` its next_since;"
                    " `: ping` heartbeats. Resume with Last-Event-ID or since",
                    "security": _AUTH,
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "format": "date-time"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "An event stream",
                            "content": {
                                "text/event-stream": {"schema": {"type": "string"}}
                            },
                        },
                        **_errors(400, 401, 429),
                    },
                }
            },
            "/v1/messages/search": {
                "get": {
                    "summary": 'words, "phrase", prefix*, from:, to:, subject:,'
                    " before:/after: YYYY-MM-DD",
                    "security": _AUTH,
                    "parameters": [
                        {
                            "name": "q",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "maxLength": 1000},
                        },
                        _intParam("limit", 1, 1000, 20),
                        _intParam("offset", 0, 10**9, 0),
                        {
                            "name": "sort",
                            "in": "query",
                            "required": False,
                            "description": "date: newest first (default);"
                            " relevance: BM25 over the newest 2,000 matches",
                            "schema": {
                                "type": "string",
                                "enum": ["date", "relevance"],
                                "default": "date",
                            },
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "results": {
                                        "type": "array",
                                        "items": {
                                            "$ref": "#/components/schemas/SearchResult"
                                        },
                                    },
                                    "query": {"type": "string"},
                                    "count": {"type": "integer"},
                                    "total_matches": {
                                        "type": "integer",
                                        "description": "exact up to 1,000;"
                                        " a lower bound when total_matches_exact"
                                        " is false",
                                    },
                                    "total_matches_exact": {"type": "boolean"},
                                },
                            }
                        ),
                        **_errors(*_STD),
                    },
                }
            },
            "/v1/messages/send": {
                "post": {
                    "summary": "Queue a message from the user (202); a copy goes"
                    " to sent",
                    "security": _AUTH,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["to", "body"],
                                    "properties": {
                                        "to": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                        "cc": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                        "bcc": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                        "subject": {"type": "string"},
                                        "body": {"type": "string"},
                                        "html": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "status": {
                                        "type": "string",
                                        "enum": ["queued", "delivered"],
                                    },
                                },
                            },
                            "Queued",
                        ),
                        **_errors(400, 401, 413, 429, 503),
                    },
                }
            },
            "/v1/account": {
                "get": {
                    "summary": "The account's address and storage use",
                    "security": _AUTH,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["email", "quota"],
                                "properties": {
                                    "email": {"type": "string"},
                                    "quota": {
                                        "type": "object",
                                        "required": ["used", "limit"],
                                        "properties": {
                                            "used": {
                                                "type": "integer",
                                                "minimum": 0,
                                            },
                                            "limit": {
                                                "type": "integer",
                                                "nullable": True,
                                                "minimum": 1,
                                            },
                                        },
                                    },
                                },
                            },
                            "Bytes used (trash excluded) and the limit;"
                            " null: unlimited",
                        ),
                        **_errors(401, 429),
                    },
                },
            },
            "/v1/outbound/{messageId}": {
                "parameters": [
                    {
                        "name": "messageId",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "get": {
                    "summary": "Delivery status of a sent message, per recipient",
                    "security": _AUTH,
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/OutboundStatus"}),
                        **_errors(401, 404, 429),
                    },
                },
            },
            "/v1/messages/{entryId}": {
                "parameters": [_ID],
                "get": {
                    "summary": "One message, parsed, with its raw MIME",
                    "security": _AUTH,
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/MessageFull"}),
                        **_errors(401, 404, 429),
                    },
                },
                "patch": {
                    "summary": "Set read_state, starred, mailbox (idempotent)",
                    "security": _AUTH,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "minProperties": 1,
                                    "additionalProperties": False,
                                    "properties": {
                                        "read_state": {"type": "boolean"},
                                        "starred": {"type": "boolean"},
                                        "mailbox": MAILBOX,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(ref),
                        **_errors(400, 401, 404, 413, 429),
                    },
                },
                "delete": {
                    "summary": "Move to trash",
                    "security": _AUTH,
                    "responses": {"200": _json(ref), **_errors(401, 404, 429)},
                },
            },
            **_folderPaths(),
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}), **_errors(429)},
                }
            },
        },
    }


FOLDER: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "name",
        "special_use",
        "system",
        "total",
        "unread",
        "subscribed",
    ],
    "properties": {
        "id": MAILBOX,
        "name": {"type": "string", "description": "The IMAP name, levels by /"},
        "special_use": {"type": "string", "nullable": True},
        "system": {"type": "boolean"},
        "total": {"type": "integer"},
        "unread": {"type": "integer"},
        "subscribed": {"type": "boolean"},
    },
}


def _folderBody(required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": required,
                    "minProperties": 1,
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "maxLength": 200},
                        "subscribed": {"type": "boolean"},
                    },
                }
            }
        },
    }


def _folderPaths() -> dict[str, Any]:
    folder = {"$ref": "#/components/schemas/Folder"}
    return {
        "/v1/folders": {
            "get": {
                "summary": "Every folder of the account, the six standard first",
                "security": _AUTH,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["folders"],
                            "properties": {
                                "folders": {"type": "array", "items": folder}
                            },
                        }
                    ),
                    **_errors(401, 429),
                },
            },
            "post": {
                "summary": "Create a folder (and its missing superiors)",
                "security": _AUTH,
                "requestBody": _folderBody(["name"]),
                "responses": {
                    "201": _json(folder, "Created"),
                    **_errors(400, 401, 409, 413, 429),
                },
            },
        },
        "/v1/folders/{key}": {
            "parameters": [_KEY],
            "patch": {
                "summary": "Rename (inferiors follow) and/or (un)subscribe",
                "security": _AUTH,
                "requestBody": _folderBody([]),
                "responses": {
                    "200": _json(folder),
                    **_errors(400, 401, 404, 409, 413, 429),
                },
            },
            "delete": {
                "summary": "Delete the folder and the mail in it (IMAP DELETE)",
                "security": _AUTH,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["deleted", "name", "messages_removed"],
                            "properties": {
                                "deleted": MAILBOX,
                                "name": {"type": "string"},
                                "messages_removed": {"type": "integer"},
                            },
                        }
                    ),
                    **_errors(401, 404, 409, 429),
                },
            },
        },
    }

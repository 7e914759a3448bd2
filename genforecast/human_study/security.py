"""The web app's defences: signed rater ids, CSRF tokens, the admin token, bounded form bodies, same-origin posts.

* A rater id travels in a cookie as ``<id>.<HMAC-SHA256(key, "rater:" + id)>``; a cookie whose signature does
  not verify (a forged or altered id) is rejected before the database is consulted.
* Every form carries a CSRF token: before consent it is a random nonce that must equal the one in a signed
  cookie (double submit); afterwards it is ``HMAC(key, "csrf:" + rater id)``. A page of another site can send a
  form to the study, but it cannot read either token, and ``SameSite=Lax`` cookies are not sent on its POSTs.
  POSTs whose ``Origin`` (or ``Sec-Fetch-Site``) says they come from another site are refused as well.
* Admin routes compare the token (``Authorization: Bearer <token>`` or ``?token=``) in constant time.
* Request bodies are read up to :data:`MAX_BODY_BYTES` (``Content-Length`` checked first, then the stream
  counted, so a chunked upload cannot get around it) and parsed as ``application/x-www-form-urlencoded`` only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request

MAX_BODY_BYTES = 8192
MAX_FORM_FIELDS = 16
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Ids that may appear in URLs and cookies: rater ids, item ids, nonces."""


class Rejected(Exception):
    """A request that must be refused with ``status`` and a short reason (nothing has been changed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Keys:
    """The study's secrets (from ``secrets.json``): the signing key and the admin token."""

    def __init__(self, cookie_key: str, admin_token: str) -> None:
        if len(cookie_key) < 32 or len(admin_token) < 16:
            raise ValueError("the study's secrets are too short")
        self._key = cookie_key.encode()
        self.admin_token = admin_token

    @classmethod
    def read(cls, path: str | Path) -> Keys:
        data = json.loads(Path(path).read_text())
        return cls(data["cookie_key"], data["admin_token"])

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def _sign(self, purpose: str, value: str) -> str:
        return f"{value}.{self._mac(purpose, value)}"

    def _verify(self, purpose: str, signed: str | None) -> str | None:
        """The value of ``<value>.<mac>``, or None if it is absent, malformed or its MAC does not match."""
        if not signed or signed.count(".") != 1:
            return None
        value, signature = signed.split(".")
        if not TOKEN_PATTERN.fullmatch(value) or not hmac.compare_digest(signature, self._mac(purpose, value)):
            return None
        return value

    def sign_rater(self, rater_id: str) -> str:
        """The cookie value carrying ``rater_id``."""
        return self._sign("rater", rater_id)

    def verify_rater(self, cookie: str | None) -> str | None:
        """The rater id in a cookie value, or None if it is absent, malformed or forged."""
        return self._verify("rater", cookie)

    def csrf_for_rater(self, rater_id: str) -> str:
        return self._mac("csrf", rater_id)[:32]

    def sign_nonce(self, nonce: str) -> str:
        """The pre-consent cookie value carrying ``nonce`` (the double-submit CSRF token of the consent form)."""
        return self._sign("nonce", nonce)

    def verify_nonce(self, cookie: str | None) -> str | None:
        return self._verify("nonce", cookie)

    def is_admin(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token", "")
        return hmac.compare_digest(token.encode(), self.admin_token.encode())


def new_token() -> str:
    return secrets.token_urlsafe(12)


def tokens_equal(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def check_same_origin(request: Request) -> None:
    """Refuse a POST that announces another site as its origin (browsers send ``Origin`` on every form POST)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Rejected(403, "cross-site request")
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc != host:
        raise Rejected(403, "cross-origin request")


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST, at most :data:`MAX_BODY_BYTES`; a repeated field is an error."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Rejected(415, "forms only (application/x-www-form-urlencoded)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise Rejected(413, "request body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Rejected(413, "request body too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as error:
        raise Rejected(400, "malformed form") from error
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise Rejected(400, f"field {key!r} given twice")
        form[key] = value
    return form

"""Bearer tokens of the agents: the tokens file, hashed at rest, checked in constant time.

A token is ``<name>.<secret>``: the name finds the agent's line in O(1), and the secret's SHA-256
is compared with the stored one by :func:`hmac.compare_digest`, whose time does not depend on
where the two differ. A plain hash (no salt, no slow KDF) is enough because the secrets are 32
random bytes, not passwords people chose: there is nothing to guess (OWASP's password storage
advice is for low-entropy secrets). A name that is not in the file is compared against a dummy
digest, so an unknown name costs the same as a wrong secret.

The file, one agent per line (``#`` starts a comment)::

    name   sha256:<64 hex digits>   hosts   [scopes]

``hosts`` is a comma-separated list of host names, ``*`` for any host (a relay), or ``-`` for
none; ``scopes`` is ``upload`` (the default), ``read`` (the ``/api/v1/`` endpoints) or
``upload,read``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from corecensus.errors import ConfigError
from corecensus.ingest.wire import valid_host

__all__ = ["ANY_HOST", "Agent", "Scope", "TokenTable", "hash_secret", "new_token"]

ANY_HOST = "*"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HASH = re.compile(r"sha256:([0-9a-f]{64})")
_DUMMY = bytes(32)


class Scope(enum.StrEnum):
    UPLOAD = "upload"
    READ = "read"


@dataclass(frozen=True, slots=True)
class Agent:
    """Who a token belongs to and what it may do."""

    name: str
    hosts: frozenset[str]
    scopes: frozenset[Scope]

    def may_speak_for(self, host: str) -> bool:
        return ANY_HOST in self.hosts or host in self.hosts

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes


def hash_secret(secret: str) -> str:
    """What the tokens file keeps of a secret."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_token(name: str, hosts: str, scopes: str = "upload") -> tuple[str, str]:
    """A fresh token for agent ``name`` and the tokens-file line that admits it."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"agent name {name!r}: 1-64 letters, digits, '_' or '-'")
    # Each is one whitespace-separated field of the line: an empty --hosts left three fields,
    # which read back as a token for a host named "upload".
    for what, value in (("hosts", hosts), ("scopes", scopes)):
        if not value or value != "".join(value.split()):
            raise ConfigError(
                f"{what} {value!r}: a comma-separated list without spaces "
                "(hosts: names, '*' for any host or '-' for none)"
            )
    secret = secrets.token_urlsafe(32)  # 256 random bits; URL-safe base64 has no '.'
    line = f"{name}  {hash_secret(secret)}  {hosts}  {scopes}"
    TokenTable.parse(line, "new token")  # the line must read back
    return f"{name}.{secret}", line


class TokenTable:
    """The parsed tokens file."""

    def __init__(self, entries: Mapping[str, tuple[bytes, Agent]]) -> None:
        self._entries = dict(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: str, origin: str) -> TokenTable:
        """Parse a tokens file; a malformed line is a :class:`ConfigError` naming ``file:line``."""
        entries: dict[str, tuple[bytes, Agent]] = {}
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{origin}:{lineno}"
            parts = line.split()
            if len(parts) not in (3, 4):
                raise ConfigError(f"{where}: expected 'name sha256:<hex> hosts [scopes]'")
            name, digest, hosts_field = parts[:3]
            if not _NAME.fullmatch(name):
                raise ConfigError(f"{where}: agent name {name[:40]!r} is not 1-64 [A-Za-z0-9_-]")
            if name in entries:
                raise ConfigError(f"{where}: agent {name!r} listed twice")
            match = _HASH.fullmatch(digest)
            if match is None:
                # Never echo this field: it may be a token pasted by mistake.
                raise ConfigError(f"{where}: second field is not sha256:<64 lowercase hex>")
            hosts = frozenset() if hosts_field == "-" else frozenset(hosts_field.split(","))
            bad = [h for h in hosts if h != ANY_HOST and not valid_host(h)]
            if bad:
                raise ConfigError(f"{where}: not a host name: {bad[0][:60]!r}")
            try:
                scopes = frozenset(
                    Scope(s) for s in (parts[3] if len(parts) == 4 else "upload").split(",")
                )
            except ValueError:
                raise ConfigError(f"{where}: scopes are upload, read or upload,read") from None
            entries[name] = (bytes.fromhex(match.group(1)), Agent(name, hosts, scopes))
        return cls(entries)

    def authenticate(self, authorization: str | None) -> Agent | None:
        """The agent an ``Authorization`` header's bearer token belongs to, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        name, dot, secret = token.strip().partition(".")
        if not dot or not secret or len(token) > 256:
            return None
        entry = self._entries.get(name)
        expected = entry[0] if entry is not None else _DUMMY
        given = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        if hmac.compare_digest(expected, given) and entry is not None:
            return entry[1]
        return None

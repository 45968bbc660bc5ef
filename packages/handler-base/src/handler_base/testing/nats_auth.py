"""Authentication and TLS material for a test ``nats-server``, made on the spot.

Nothing is shipped: every certificate, NKey and JWT is created in the test that uses it.

* :func:`make_tls_files`: a CA (``trustme``), a server certificate for 127.0.0.1 and
  localhost, and a client certificate, as PEM files; :func:`tls_config` is the server's
  ``tls {}`` block (``verify_clients=True`` for mutual TLS).
* :func:`user_password_config`, :func:`token_config`: ``authorization {}`` blocks.
* :func:`make_operator_auth`: decentralized auth (operator mode), as NATS runs it with
  ``nsc``: operator, account and user NKeys, the JWTs signed here with ``nkeys``, the
  server config (``operator``, ``resolver: MEMORY``, ``resolver_preload``) and a user
  ``.creds`` file in the standard format.

Server config blocks are plain text; join several with newlines and pass them as
``NatsServer(config=...)``. Secrets are quoted as JSON strings, which the NATS config
parser reads as its own double-quoted strings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_NO_LIMITS = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
    # JetStream is on for the account when a storage limit is not 0.
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
}


# --- TLS --------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test CA and the certificates it issued."""

    ca: Path
    """The CA certificate: what clients (``NATS_TLS_CA_FILE``) and the server trust."""
    server_cert: Path
    server_key: Path
    client_cert: Path
    """A client certificate for mutual TLS (``NATS_TLS_CERT_FILE``)."""
    client_key: Path


def make_tls_files(
    folder: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> TlsFiles:
    """A new CA, a server certificate for ``hosts`` and a client certificate, in ``folder``."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert(*hosts)
    client = ca.issue_cert("nats-client@example.test", common_name="nats-client")
    files = TlsFiles(
        ca=folder / "ca.pem",
        server_cert=folder / "server-cert.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "client-cert.pem",
        client_key=folder / "client-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    return files


def tls_config(files: TlsFiles, *, verify_clients: bool = False, timeout_s: float = 2.0) -> str:
    """The server's ``tls {}`` block: TLS required; with ``verify_clients``, client certs too."""
    lines = [
        f"  cert_file: {json.dumps(str(files.server_cert))}",
        f"  key_file: {json.dumps(str(files.server_key))}",
        f"  ca_file: {json.dumps(str(files.ca))}",
        f"  timeout: {timeout_s:g}",
    ]
    if verify_clients:
        lines.append("  verify: true")
    return "tls {\n" + "\n".join(lines) + "\n}\n"


# --- user/password and token --------------------------------------------------------


def user_password_config(user: str, password: str) -> str:
    """An ``authorization {}`` block with one user and password."""
    return f"authorization {{ user: {json.dumps(user)}, password: {json.dumps(password)} }}\n"


def token_config(token: str) -> str:
    """An ``authorization {}`` block with a token."""
    return f"authorization {{ token: {json.dumps(token)} }}\n"


# --- operator mode: NKeys, JWTs and .creds files ------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_nkey(prefix: str) -> Any:
    """A new ``nkeys.KeyPair`` of the kind ``prefix`` names: ``operator``, ``account``, ``user``."""
    import nkeys  # type: ignore[import-untyped]

    byte = {
        "operator": nkeys.PREFIX_BYTE_OPERATOR,
        "account": nkeys.PREFIX_BYTE_ACCOUNT,
        "user": nkeys.PREFIX_BYTE_USER,
    }[prefix]
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), byte)))


def public_key(keypair: Any) -> str:
    """The public key of an ``nkeys.KeyPair`` as text (``O...``, ``A...``, ``U...``)."""
    key: bytes = keypair.public_key
    return key.decode()


def seed_text(keypair: Any) -> str:
    """The seed of an ``nkeys.KeyPair`` as text (``SO...``, ``SA...``, ``SU...``)."""
    seed: bytes = keypair.seed
    return bytes(seed).decode()


def encode_jwt(claims: dict[str, Any], signer: Any) -> str:
    """A NATS (v2) JWT of ``claims``, issued and signed by ``signer`` (an ``nkeys.KeyPair``).

    ``iat``, ``iss`` and ``jti`` are filled in, as the NATS JWT library does.
    """
    body = {"iat": int(time.time()), "iss": public_key(signer), **claims}
    digest = hashlib.sha512(json.dumps(body, sort_keys=True).encode()).digest()[:32]
    body["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signing_input = (
        f"{_b64url(json.dumps(_JWT_HEADER).encode())}.{_b64url(json.dumps(body).encode())}"
    )
    return f"{signing_input}.{_b64url(signer.sign(signing_input.encode()))}"


def creds_text(user_jwt: str, user_seed: str) -> str:
    """A user ``.creds`` file in the standard format (as ``nsc`` writes it)."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def user_jwt(account: Any, user: Any, name: str) -> str:
    """A user JWT for ``user`` signed by ``account`` (both ``nkeys.KeyPair``), no limits."""
    claims = {
        "name": name,
        "sub": public_key(user),
        "nats": {
            "pub": {},
            "sub": {},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        },
    }
    return encode_jwt(claims, account)


@dataclass(frozen=True)
class OperatorAuth:
    """Operator-mode auth for one account with one user, as files and server config."""

    server_config: str
    """``operator``, ``resolver: MEMORY`` and ``resolver_preload`` for the account."""
    creds_file: Path
    """The user's ``.creds`` file (JWT and seed)."""
    user_seed: str
    """The user's NKey seed (the secret in the creds file), for checks that it is not leaked."""
    user_jwt: str
    account: Any
    """The account's ``nkeys.KeyPair``, to sign more users with :meth:`add_user`."""

    def add_user(self, path: Path, name: str) -> Path:
        """Write a ``.creds`` file for another user of the account."""
        user = new_nkey("user")
        path.write_text(creds_text(user_jwt(self.account, user, name), seed_text(user)))
        return path


def make_operator_auth(folder: Path, *, account_name: str = "APP") -> OperatorAuth:
    """Operator, account and user NKeys, their signed JWTs, the server config, a creds file.

    The account has no limits and JetStream on. Files go into ``folder``: the operator
    JWT (``operator.jwt``) and the user's ``user.creds``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    operator, account, user = new_nkey("operator"), new_nkey("account"), new_nkey("user")
    system = new_nkey("account")  # JetStream needs a system account in operator mode
    operator_jwt = encode_jwt(
        {
            "name": "test-operator",
            "sub": public_key(operator),
            "nats": {"system_account": public_key(system), "type": "operator", "version": 2},
        },
        operator,
    )
    account_jwts = {
        public_key(key): encode_jwt(
            {
                "name": name,
                "sub": public_key(key),
                "nats": {**nats, "type": "account", "version": 2},
            },
            operator,
        )
        for key, name, nats in (
            (account, account_name, {"limits": _NO_LIMITS}),
            (system, "SYS", {}),
        )
    }
    the_user_jwt = user_jwt(account, user, "test-user")
    operator_file = folder / "operator.jwt"
    operator_file.write_text(operator_jwt)
    creds_file = folder / "user.creds"
    creds_file.write_text(creds_text(the_user_jwt, seed_text(user)))
    server_config = (
        f"operator: {json.dumps(str(operator_file))}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        + "".join(f"  {key}: {json.dumps(jwt)}\n" for key, jwt in account_jwts.items())
        + "}\n"
    )
    return OperatorAuth(
        server_config=server_config,
        creds_file=creds_file,
        user_seed=seed_text(user),
        user_jwt=the_user_jwt,
        account=account,
    )

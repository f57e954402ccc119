"""`merclip token issue|verify`: mint and check the HMAC access tokens of stream/auth.py.

    MERCLIP_AUTH_SECRET=... merclip token issue --session alice --role publisher
    merclip token issue --session '*' --role monitor --ttl 600
    merclip token verify TOKEN

The secret is auth.secret (set it through MERCLIP_AUTH_SECRET rather than the file); the default
lifetime is auth.token_ttl_s.
"""

from __future__ import annotations

import argparse
import json

from merclip.errors import ConfigError
from stream.auth import ROLES, issue_token, verify_token
from workers.app.settings import Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = sub.add_parser("issue", help="print a new token")
    issue.add_argument("--session", required=True, help="session id ('*' with --role monitor)")
    issue.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="what the token may do (monitor: every session)",
    )
    issue.add_argument("--ttl", type=float, default=None, help="seconds (default auth.token_ttl_s)")
    verify = sub.add_parser("verify", help="check a token and print its claims as JSON")
    verify.add_argument("token", help="the token to check")


def run(args: argparse.Namespace, settings: Settings) -> int:
    secret = settings.auth.secret
    if args.token_command == "issue":
        ttl = args.ttl if args.ttl is not None else settings.auth.token_ttl_s
        try:
            print(issue_token(secret, args.session, args.role, ttl))
        except ValueError as exc:  # a bad session id or TTL: fix the command
            raise ConfigError(str(exc)) from None
        return 0
    claims = verify_token(secret, args.token)
    print(json.dumps({"session": claims.session, "role": claims.role, "expires": claims.expires}))
    return 0

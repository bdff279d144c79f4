"""Bearer tokens with scopes.

``Authorization: Bearer <token>``. No token, an unknown one or a revoked one
is 401 (with ``WWW-Authenticate: Bearer``); a valid token without the scope
is 403. A token with ``admin`` holds every scope. Tokens are never logged:
only their public id is, and it is what requests record as their submitter.
"""

from __future__ import annotations

from fastapi import Request

from lifecycle.http.problems import HttpProblem
from lifecycle.store.tokens import ApiToken

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="lifecycle"'}


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise HttpProblem(401, "Unauthenticated", "this endpoint needs an API token: Authorization: Bearer <token> "
                                                  "(lifecycle token create)", CHALLENGE)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpProblem(401, "Unauthenticated", "the Authorization header must be 'Bearer <token>'", CHALLENGE)
    return token.strip()


def require(*scopes: str):
    """A dependency: the request's token, which must hold one of ``scopes``."""

    def dependency(request: Request) -> ApiToken:
        token = request.app.state.lc.authenticate(_bearer(request))
        if token is None or not token.active:
            raise HttpProblem(401, "Unauthenticated", "the API token is unknown or revoked", CHALLENGE)
        if not any(token.allows(s) for s in scopes):
            raise HttpProblem(403, "Forbidden", f"token {token.id} lacks the scope this needs: "
                                                f"{' or '.join(scopes)}")
        request.state.token_id = token.id
        return token

    return dependency

"""Bearer tokens with scopes, and each token's rate limit.

``Authorization: Bearer <token>``. No token, an unknown one or a revoked one
is 401 (with ``WWW-Authenticate: Bearer``); a valid token without the scope
is 403; a token over its rate limit is 429 with ``Retry-After`` (see
``lifecycle.http.limits``). A token with ``admin`` holds every scope. A
browser that logged in at ``/dashboard/login`` holds the token in a cookie,
taken by reads (GET, HEAD) only, so that no other site can make it write.
Tokens are never logged: only their public id is, and it is what requests
record as their submitter.
"""

from __future__ import annotations

from fastapi import Request

from lifecycle.http.limits import retry_after
from lifecycle.http.problems import HttpProblem
from lifecycle.store.tokens import ApiToken

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="lifecycle"'}
COOKIE = "lifecycle_token"
READ_METHODS = ("GET", "HEAD")


def _secret(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        cookie = request.cookies.get(COOKIE) if request.method in READ_METHODS else None
        if cookie:
            return cookie
        raise HttpProblem(401, "Unauthenticated", "this endpoint needs an API token: Authorization: Bearer <token> "
                                                  "(lifecycle token create)", CHALLENGE)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpProblem(401, "Unauthenticated", "the Authorization header must be 'Bearer <token>'", CHALLENGE)
    return token.strip()


def authenticate(request: Request, secret: str) -> ApiToken:
    """The active token ``secret`` stands for, with one request taken from its rate limit."""
    token = request.app.state.lc.authenticate(secret)
    if token is None or not token.active:
        raise HttpProblem(401, "Unauthenticated", "the API token is unknown or revoked", CHALLENGE)
    wait = request.app.state.rate_limits.take(token.id)
    if wait > 0:
        limit = request.app.state.rate_limits.limit
        raise HttpProblem(429, "RateLimited", f"token {token.id} is over its rate limit ({limit.rate:g} requests "
                                              f"per second, bursts of {limit.burst}); retry later",
                          {"Retry-After": retry_after(wait)})
    return token


def require(*scopes: str):
    """A dependency: the request's token, which must hold one of ``scopes``."""

    def dependency(request: Request) -> ApiToken:
        token = authenticate(request, _secret(request))
        if not any(token.allows(s) for s in scopes):
            raise HttpProblem(403, "Forbidden", f"token {token.id} lacks the scope this needs: "
                                                f"{' or '.join(scopes)}")
        request.state.token_id = token.id
        return token

    return dependency

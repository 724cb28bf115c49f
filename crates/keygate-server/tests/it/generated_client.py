"""keygate through a Python client that openapi-python-client generated from keygate's OpenAPI
document, used as generated: who the token is, a service token created, and that token found in
the list; and a refused credential answered with a problem the client reads.

Usage (the generated package `keygate_client` importable): generated_client.py BASE_URL TOKEN
Run by tests/it/tools.rs; prints `ok` when everything held.
"""

import sys

from keygate_client import AuthenticatedClient
from keygate_client.api.identity import whoami
from keygate_client.api.tokens import create_token, list_tokens
from keygate_client.models import (
    CreatedToken,
    CreateToken,
    ListTokenView,
    Problem,
    TokenKind,
    TokenView,
    WhoAmI,
)


def main(base_url: str, token: str) -> None:
    with AuthenticatedClient(base_url=base_url, token=token) as client:
        me = whoami.sync_detailed(client=client)
        assert me.status_code == 200, me
        assert isinstance(me.parsed, WhoAmI), me.parsed
        assert me.parsed.organization.slug == "root", me.parsed
        assert me.parsed.principal.type_ == "service_token", me.parsed
        assert "tokens:write" in me.parsed.permissions, me.parsed

        created = create_token.sync_detailed(
            client=client,
            body=CreateToken(
                kind=TokenKind.SERVICE,
                name="made by a generated client",
                role="viewer",
            ),
        )
        assert created.status_code == 201, created
        assert isinstance(created.parsed, CreatedToken), created.parsed
        assert created.parsed.secret.startswith("kg_service_live_"), created.parsed
        assert created.parsed.role is not None

        listed = list_tokens.sync_detailed(client=client, kind=[TokenKind.SERVICE])
        assert listed.status_code == 200, listed
        assert isinstance(listed.parsed, ListTokenView), listed.parsed
        assert all(isinstance(t, TokenView) for t in listed.parsed.data), listed.parsed
        found = [t for t in listed.parsed.data if t.id == created.parsed.id]
        assert len(found) == 1, listed.parsed
        assert found[0].name == "made by a generated client", found[0]

    with AuthenticatedClient(base_url=base_url, token="kg_service_live_nope") as stranger:
        refused = whoami.sync_detailed(client=stranger)
        assert refused.status_code == 401, refused
        assert isinstance(refused.parsed, Problem), refused.parsed
        assert refused.parsed.code == "unauthenticated", refused.parsed

    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

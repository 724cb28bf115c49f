"""Checks a keygate access token as a resource server using Authlib would: with its RFC 9068
validator (authlib.oauth2.rfc9068.JWTBearerTokenValidator), given the JWKS fetched from keygate.

Usage: authlib_rfc9068.py JWKS_URL ISSUER AUDIENCE TOKEN accept|refuse-algorithm

`accept`: the token must pass, and the same token must be refused for another audience, for
another issuer and with its signature changed, so the check cannot pass by accepting anything.
`refuse-algorithm`: the validator must refuse the token for its algorithm alone (Authlib's JOSE
library, joserfc, no longer accepts `EdDSA` unless told to; RFC 9864).
"""

import json
import sys
import urllib.request

from authlib.oauth2.rfc6750.errors import InvalidTokenError
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from joserfc.errors import UnsupportedAlgorithmError

jwks_url, issuer, audience, token, expect = sys.argv[1:]
with urllib.request.urlopen(jwks_url) as response:
    jwks = json.load(response)


class KeygateValidator(JWTBearerTokenValidator):
    def get_jwks(self):
        return jwks


def validate(token, issuer=issuer, audience=audience):
    validator = KeygateValidator(issuer=issuer, resource_server=audience)
    claims = validator.authenticate_token(token)
    validator.validate_token(claims, scopes=None, request=None)
    return claims


def refused(why, **kwargs):
    try:
        validate(**kwargs)
    except InvalidTokenError:
        return
    sys.exit(f"Authlib accepted a token {why}")


if expect == "refuse-algorithm":
    try:
        validate(token)
    except InvalidTokenError as error:
        if not isinstance(error.__cause__, UnsupportedAlgorithmError):
            sys.exit(f"refused, but not for its algorithm: {error.__cause__!r}")
        print(f"authlib rfc9068: refused for its algorithm, as expected ({error.__cause__})")
        sys.exit(0)
    sys.exit("Authlib accepted the token, which this check did not expect: update it and the README")

claims = validate(token)
assert claims["client_id"] == claims["sub"], claims
refused("for another audience", token=token, audience="https://not-this-api.example")
refused("from another issuer", token=token, issuer="https://not-this-issuer.example")
head, payload, signature = token.split(".")
changed = "A" if signature[0] != "A" else "B"
refused("with a changed signature", token=f"{head}.{payload}.{changed}{signature[1:]}")
print(f"authlib rfc9068: valid for {claims['aud']}, client {claims['client_id']}; forgeries refused")

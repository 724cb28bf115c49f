"""Checks a keygate access token with PyJWT, its key found by PyJWKClient at keygate's JWKS URL,
the issuer and audience checked.

Usage: pyjwt_jwks.py JWKS_URL ISSUER AUDIENCE TOKEN

The same token must then be refused for another audience and another issuer, and with its
signature changed, so the check cannot pass by accepting anything.
"""

import sys

import jwt

jwks_url, issuer, audience, token = sys.argv[1:]
client = jwt.PyJWKClient(jwks_url)
key = client.get_signing_key_from_jwt(token)


def decode(token, issuer=issuer, audience=audience):
    return jwt.decode(
        token,
        key,
        algorithms=["ES256", "EdDSA", "RS256"],
        issuer=issuer,
        audience=audience,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )


claims = decode(token)
if jwt.get_unverified_header(token)["typ"] != "at+jwt":
    sys.exit("not an RFC 9068 access token")
for error, kwargs in [
    (jwt.InvalidAudienceError, {"audience": "https://not-this-api.example"}),
    (jwt.InvalidIssuerError, {"issuer": "https://not-this-issuer.example"}),
]:
    try:
        decode(token, **kwargs)
    except error:
        continue
    sys.exit(f"PyJWT accepted the token with {kwargs}")
head, payload, signature = token.split(".")
changed = "A" if signature[0] != "A" else "B"
try:
    decode(f"{head}.{payload}.{changed}{signature[1:]}")
except jwt.InvalidSignatureError:
    pass
else:
    sys.exit("PyJWT accepted a changed signature")
print(f"pyjwt: {key.algorithm_name} token valid for {claims['aud']}; forgeries refused")

"""Checks keygate's RFC 8414 metadata with Authlib's AuthorizationServerMetadata.validate().

Usage: authlib_metadata.py METADATA_URL

The document must pass; the same document with an empty response_types_supported (what keygate
served before) must not, so the check is known to look.
"""

import json
import sys
import urllib.request

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

(url,) = sys.argv[1:]
with urllib.request.urlopen(url) as response:
    document = json.load(response)

AuthorizationServerMetadata(document).validate()
try:
    AuthorizationServerMetadata({**document, "response_types_supported": []}).validate()
except ValueError:
    pass
else:
    sys.exit("Authlib accepted metadata without response types")
print(f"authlib rfc8414: metadata of {document['issuer']} valid")

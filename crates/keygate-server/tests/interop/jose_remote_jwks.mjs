// Checks a keygate access token with the npm package jose: jwtVerify, the keys fetched by
// createRemoteJWKSet from keygate's JWKS URL, with the issuer, audience and `typ` checked.
//
// Usage: KEYGATE_JOSE_DIR=<folder with node_modules/jose> node jose_remote_jwks.mjs \
//          JWKS_URL ISSUER AUDIENCE TOKEN
//
// The same token must then be refused for another audience and another issuer, and with its
// signature changed, so the check cannot pass by accepting anything.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [jwksUrl, issuer, audience, token] = process.argv.slice(2);
const resolve = createRequire(join(process.env.KEYGATE_JOSE_DIR, 'package.json')).resolve;
const { createRemoteJWKSet, jwtVerify } = await import(pathToFileURL(resolve('jose')).href);

const keys = createRemoteJWKSet(new URL(jwksUrl));
const verify = (jwt, options = {}) =>
  jwtVerify(jwt, keys, {
    issuer,
    audience,
    typ: 'at+jwt',
    requiredClaims: ['exp', 'iat', 'sub', 'jti'],
    ...options,
  });

const { payload, protectedHeader } = await verify(token);

const refusals = [
  ['another audience', token, { audience: 'https://not-this-api.example' }, 'ERR_JWT_CLAIM_VALIDATION_FAILED'],
  ['another issuer', token, { issuer: 'https://not-this-issuer.example' }, 'ERR_JWT_CLAIM_VALIDATION_FAILED'],
];
const [head, body, signature] = token.split('.');
const changed = `${head}.${body}.${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`;
refusals.push(['a changed signature', changed, {}, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED']);
for (const [why, jwt, options, code] of refusals) {
  try {
    await verify(jwt, options);
  } catch (error) {
    if (error.code === code) continue;
    throw error;
  }
  console.error(`jose accepted the token with ${why}`);
  process.exit(1);
}
console.log(`jose: ${protectedHeader.alg} token valid for ${JSON.stringify(payload.aud)}; forgeries refused`);

// A real OpenID provider (node's `oidc-provider`, a certified
// implementation) on loopback for outpost-cloud's staff sign-in tests.
//
// Usage: node provider.js   (stdin: one line `REDIRECT_URI CLIENT_SECRET`)
// It listens on 127.0.0.1 (a free port), prints `port=N`, reads the line,
// then prints `ready`. Signing keys are made fresh at each start, so two
// instances never share keys. The interaction route signs in the user
// named by `login_hint` and grants consent at once; the tokens are the
// provider's real, signed ones. Env: ID_TOKEN_TTL (seconds, default 600);
// CLOCK_OFFSET_SECS (default 0): the provider's clock runs this far off,
// e.g. -7200 makes it issue ID tokens that expired an hour ago.
import crypto from 'node:crypto';
import http from 'node:http';
import readline from 'node:readline';
import Provider from 'oidc-provider';

// Test staff: role, regions and privacy training as the cloud reads them.
const USERS = {
  alice: { email: 'alice@example.test', outpost_role: 'support', outpost_regions: ['eu'], privacy_trained: true },
  bob: { email: 'bob@example.test', outpost_role: 'support', outpost_regions: ['us'], privacy_trained: true },
  carol: { email: 'carol@example.test', outpost_role: 'support', outpost_regions: ['eu'], privacy_trained: false },
  dave: { email: 'dave@example.test', outpost_regions: ['eu'], privacy_trained: true },
  // No e-mail address: a sign-in from a new place cannot be confirmed.
  erin: { outpost_role: 'support', outpost_regions: ['eu'], privacy_trained: true },
};

const offsetMs = Number(process.env.CLOCK_OFFSET_SECS || 0) * 1000;
if (offsetMs) {
  const realNow = Date.now;
  Date.now = () => realNow() + offsetMs;
}

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
console.log(`port=${port}`);

const rl = readline.createInterface({ input: process.stdin });
const line = await new Promise((resolve) => rl.once('line', resolve));
const [redirectUri, clientSecret] = line.trim().split(/\s+/);

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'outpost-staff',
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: { openid: ['sub', 'email', 'outpost_role', 'outpost_regions', 'privacy_trained'] },
  // The authorisation claims go into the ID token itself.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  ttl: { IdToken: Number(process.env.ID_TOKEN_TTL || 600) },
  async findAccount(ctx, id) {
    if (!USERS[id]) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...USERS[id] }; } };
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const callback = provider.callback();
server.on('request', async (req, res) => {
  if (!req.url.startsWith('/interaction/')) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, session } = details;
    if (prompt.name === 'login') {
      const user = params.login_hint;
      if (!USERS[user]) {
        res.statusCode = 403;
        return res.end('unknown user\n');
      }
      return await provider.interactionFinished(req, res, { login: { accountId: user } }, { mergeWithLastSubmission: false });
    }
    if (prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      const grantId = await grant.save();
      return await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    res.statusCode = 400;
    res.end('unexpected prompt\n');
  } catch (err) {
    console.error('interaction failed', err);
    res.statusCode = 500;
    res.end('interaction failed\n');
  }
});
console.log('ready');

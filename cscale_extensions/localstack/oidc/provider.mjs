// The embedded OpenID Connect provider of C-SCALE Hub's local stack (stand-in for EGI Check-in).
//
// Usage: node provider.mjs CONFIG.json
//
// Built on the `oidc-provider` package, with its own login page (no devInteractions) that checks
// passwords against scrypt hashes in an accounts file. The package is imported from
// $CSCALE_NODE_MODULES (a node_modules directory) when set, else resolved normally.
//
// CONFIG.json (written by cscale_extensions/localstack/oidc/embedded.py):
// {
//   "issuer": "http://127.0.0.1:PORT",          // public URL of this provider
//   "host": "127.0.0.1", "port": PORT,           // where to listen
//   "accounts_file": "/abs/accounts.json",       // see below; re-read when its mtime changes
//   "jwks_file": "/abs/jwks.json",               // private signing JWKS; an RSA key is generated
//                                                //   (mode 0600) on first start when missing
//   "store_file": "/abs/store.json" | null,      // sessions, grants and tokens survive restarts
//                                                //   in this file (null: memory only)
//   "cookie_keys": ["random", ...],              // cookie signing keys, newest first
//   "clients": [{"client_id": "...", "client_secret": "...", "client_name": "...",
//                "redirect_uris": ["..."], "post_logout_redirect_uris": ["..."]}],
//   "ttl": {"access_token": 3600, "id_token": 3600, "refresh_token": 1209600,
//           "session": 28800},                   // seconds
//   "pkce_required": true                        // refuse authorization requests without PKCE
// }
//
// accounts_file:
// {"version": 1, "accounts": {"<username>": {
//     "sub": "<stable subject id>", "password": "scrypt$N$r$p$<salt b64>$<hash b64>",
//     "name": "...", "given_name": "...", "family_name": "...",
//     "email": "...", "email_verified": true,
//     "entitlements": ["urn:mace:egi.eu:group:vo.cscale.eu:role=member#aai.egi.eu"],
//     "disabled": false}}}
//
// Behaviour: authorization code flow only, PKCE S256, client_secret_basic and client_secret_post
// both accepted, consent skipped for the configured (first-party) clients, a refresh token issued
// to every client allowed the refresh_token grant (with or without offline_access) and NOT rotated
// (the same refresh token keeps working until it expires, so concurrent refreshes by the hub cannot
// trip reuse detection). Disabled or deleted accounts lose userinfo and refresh at once.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const scrypt = promisify(crypto.scrypt);

// ---------------------------------------------------------------------------------- utilities

function log(message, fields = {}) {
  const parts = Object.entries(fields).map(([k, v]) => `${k}=${JSON.stringify(String(v ?? ''))}`);
  process.stdout.write(`${new Date().toISOString()} ${message}${parts.length ? ' ' : ''}${parts.join(' ')}\n`);
}

function escapeHtml(value) {
  return String(value ?? '').replace(/[&<>"'`=]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function writeFileAtomic(file, text) {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

async function loadProviderClass() {
  const dir = process.env.CSCALE_NODE_MODULES;
  if (dir) {
    const pkgDir = path.join(dir, 'oidc-provider');
    const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
    const mod = await import(pathToFileURL(path.join(pkgDir, pkg.main || 'lib/index.js')).href);
    return mod.default;
  }
  return (await import('oidc-provider')).default;
}

// ---------------------------------------------------------------------------------- accounts

// Parses "scrypt$N$r$p$salt$hash" (standard base64); null when malformed.
function parseHash(encoded) {
  const parts = typeof encoded === 'string' ? encoded.split('$') : [];
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [N, r, p] = parts.slice(1, 4).map((x) => Number.parseInt(x, 10));
  const salt = Buffer.from(parts[4], 'base64');
  const hash = Buffer.from(parts[5], 'base64');
  if (![N, r, p].every(Number.isSafeInteger) || N < 2 || r < 1 || p < 1) return null;
  if (salt.length < 8 || hash.length < 16) return null;
  return { N, r, p, salt, hash };
}

// A well-formed hash of a random password, to spend the same time on unknown usernames.
const DUMMY = {
  N: 16384, r: 8, p: 1, salt: crypto.randomBytes(16), hash: crypto.randomBytes(32),
};

async function verifyPassword(password, encoded) {
  const parsed = parseHash(encoded);
  const h = parsed ?? DUMMY;
  const derived = await scrypt(String(password).normalize('NFC'), h.salt, h.hash.length, {
    N: h.N, r: h.r, p: h.p, maxmem: 256 * h.N * h.r + 1024 * 1024,
  });
  return crypto.timingSafeEqual(derived, h.hash) && parsed !== null;
}

class AccountStore {
  constructor(file) {
    this.file = file;
    this.stamp = null;
    this.byName = new Map();
    this.bySub = new Map();
  }

  // Re-reads the file when its mtime, ctime, size or inode changed; keeps the last good copy on errors.
  refresh() {
    let st;
    try {
      st = fs.statSync(this.file);
    } catch {
      if (this.stamp !== 'missing') log('accounts file missing', { file: this.file });
      this.stamp = 'missing';
      this.byName = new Map();
      this.bySub = new Map();
      return;
    }
    const stamp = `${st.mtimeMs}:${st.ctimeMs}:${st.size}:${st.ino}`;
    if (stamp === this.stamp) return;
    try {
      const data = JSON.parse(fs.readFileSync(this.file, 'utf8'));
      const accounts = data?.accounts;
      if (!accounts || typeof accounts !== 'object') throw new Error('no "accounts" object');
      const byName = new Map();
      const bySub = new Map();
      for (const [username, acc] of Object.entries(accounts)) {
        if (!acc || typeof acc !== 'object') continue;
        const account = { ...acc, username, sub: String(acc.sub || username) };
        byName.set(username, account);
        bySub.set(account.sub, account);
      }
      this.byName = byName;
      this.bySub = bySub;
      this.stamp = stamp;
      log('accounts loaded', { file: this.file, count: byName.size });
    } catch (err) {
      this.stamp = stamp;
      log('accounts file unreadable, keeping the previous accounts', { file: this.file, error: err.message });
    }
  }

  byUsername(username) {
    this.refresh();
    return this.byName.get(username);
  }

  bySubject(sub) {
    this.refresh();
    return this.bySub.get(sub);
  }
}

function claimsOf(account) {
  const entitlements = Array.isArray(account.entitlements) ? account.entitlements.map(String) : [];
  const claims = {
    sub: account.sub,
    preferred_username: account.username,
    name: account.name || account.username,
    eduperson_entitlement: entitlements,
  };
  for (const key of ['given_name', 'family_name', 'email']) {
    if (account[key]) claims[key] = String(account[key]);
  }
  if (account.email) claims.email_verified = account.email_verified !== false;
  return claims;
}

// ---------------------------------------------------------------------------------- signing keys

function loadOrCreateJwks(file) {
  if (fs.existsSync(file)) {
    const jwks = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (!Array.isArray(jwks.keys) || !jwks.keys.length) throw new Error(`${file}: no keys`);
    return jwks;
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const jwks = {
    keys: [{ ...jwk, kid: crypto.randomBytes(12).toString('base64url'), use: 'sig', alg: 'RS256' }],
  };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, JSON.stringify(jwks));
  log('generated signing key', { file });
  return jwks;
}

// ---------------------------------------------------------------------------------- storage

// Adapter keeping every model in one JSON file, rewritten atomically after each change.
class FileStore {
  constructor(file) {
    this.file = file;
    this.entries = new Map(); // "Model:id" -> {payload, exp (ms epoch or null)}
    this.writing = null;
    this.dirty = false;
    if (file && fs.existsSync(file)) {
      try {
        const now = Date.now();
        for (const [key, entry] of Object.entries(JSON.parse(fs.readFileSync(file, 'utf8')))) {
          if (!entry.exp || entry.exp > now) this.entries.set(key, entry);
        }
      } catch (err) {
        log('token store unreadable, starting empty', { file, error: err.message });
      }
    }
  }

  get(key) {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.exp && entry.exp <= Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  persist() {
    if (!this.file) return;
    this.dirty = true;
    if (this.writing) return;
    this.writing = setImmediate(() => {
      this.writing = null;
      if (!this.dirty) return;
      this.dirty = false;
      const now = Date.now();
      const out = {};
      for (const [key, entry] of this.entries) {
        if (!entry.exp || entry.exp > now) out[key] = entry;
      }
      try {
        writeFileAtomic(this.file, JSON.stringify(out));
      } catch (err) {
        log('could not write the token store', { file: this.file, error: err.message });
      }
    });
  }

  flushSync() {
    if (this.writing) {
      clearImmediate(this.writing);
      this.writing = null;
    }
    if (this.dirty && this.file) {
      this.dirty = false;
      writeFileAtomic(this.file, JSON.stringify(Object.fromEntries(this.entries)));
    }
  }

  adapterFor(model) {
    const store = this;
    const key = (id) => `${model}:${id}`;
    const scan = (pred) => {
      for (const [k, entry] of store.entries) {
        if (k.startsWith(`${model}:`) && pred(entry.payload)) return store.get(k);
      }
      return undefined;
    };
    return {
      async upsert(id, payload, expiresIn) {
        const exp = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : null;
        store.entries.set(key(id), { payload, exp });
        store.persist();
      },
      async find(id) {
        return store.get(key(id));
      },
      async findByUid(uid) {
        return scan((p) => p.uid === uid);
      },
      async findByUserCode(userCode) {
        return scan((p) => p.userCode === userCode);
      },
      async consume(id) {
        const payload = store.get(key(id));
        if (payload) {
          payload.consumed = Math.floor(Date.now() / 1000);
          store.persist();
        }
      },
      async destroy(id) {
        if (store.entries.delete(key(id))) store.persist();
      },
      async revokeByGrantId(grantId) {
        let changed = false;
        for (const [k, entry] of store.entries) {
          if (k.startsWith(`${model}:`) && entry.payload?.grantId === grantId) {
            store.entries.delete(k);
            changed = true;
          }
        }
        if (changed) store.persist();
      },
    };
  }
}

// ---------------------------------------------------------------------------------- pages

const TITLE = 'C-SCALE Hub — sign in (embedded identity provider)';

const STYLE = `
  *{box-sizing:border-box}
  body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
    font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#eef2f6;color:#1d2733}
  main{background:#fff;width:min(26rem,92vw);padding:2rem 2.25rem;border-radius:10px;
    box-shadow:0 4px 18px rgba(20,40,70,.12)}
  h1{font-size:1.25rem;margin:0 0 .35rem}
  p.sub{margin:0 0 1.25rem;color:#55606e;font-size:.9rem}
  label{display:block;font-size:.85rem;font-weight:600;margin:.9rem 0 .3rem}
  input{width:100%;padding:.6rem .7rem;border:1px solid #b8c2cc;border-radius:6px;font-size:1rem}
  input:focus{outline:2px solid #1f6feb;border-color:#1f6feb}
  button{margin-top:1.3rem;width:100%;padding:.65rem;border:0;border-radius:6px;background:#1f6feb;
    color:#fff;font-size:1rem;font-weight:600;cursor:pointer}
  button.secondary{background:#e4e9ef;color:#1d2733}
  button:hover{filter:brightness(.95)}
  .error{background:#fdecec;border:1px solid #f2b8b5;color:#8a1c1c;padding:.6rem .75rem;border-radius:6px;
    font-size:.9rem;margin-bottom:.5rem}
  .note{font-size:.8rem;color:#6b7683;margin-top:1.2rem}
`;

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body><main>
${body}
</main></body>
</html>`;
}

function loginPage({ uid, clientName, username = '', error = '' }) {
  return page(TITLE, `<h1>Sign in to C-SCALE Hub</h1>
<p class="sub">Embedded identity provider${clientName ? ` · for ${escapeHtml(clientName)}` : ''}</p>
${error ? `<div class="error" role="alert">${escapeHtml(error)}</div>` : ''}
<form method="post" action="/interaction/${escapeHtml(encodeURIComponent(uid))}/login" autocomplete="on">
<label for="username">Username</label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none"
  spellcheck="false" required value="${escapeHtml(username)}"${username ? '' : ' autofocus'}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required${username ? ' autofocus' : ''}>
<button type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${escapeHtml(encodeURIComponent(uid))}/abort">
<button type="submit" class="secondary">Cancel</button>
</form>
<p class="note">This local provider stands in for EGI Check-in. Accounts are managed with
<code>cscale-hub accounts</code>.</p>`);
}

function messagePage(heading, message) {
  return page(`C-SCALE Hub — ${heading}`, `<h1>${escapeHtml(heading)}</h1>
<p class="sub">C-SCALE Hub · embedded identity provider</p>
<p>${escapeHtml(message)}</p>`);
}

function send(res, status, html, headers = {}) {
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Cache-Control': 'no-store',
    'X-Frame-Options': 'DENY',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    ...headers,
  });
  res.end(html);
}

// ---------------------------------------------------------------------------------- provider

function buildConfiguration(cfg, accounts, store, jwks) {
  const ttl = cfg.ttl || {};
  const clients = (cfg.clients || []).map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    client_name: c.client_name || c.client_id,
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris || [],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }));
  const firstParty = new Set(clients.map((c) => c.client_id));
  const configuration = {
    clients,
    jwks,
    cookies: { keys: cfg.cookie_keys },
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username', 'given_name', 'family_name'],
      email: ['email', 'email_verified'],
      eduperson_entitlement: ['eduperson_entitlement'],
    },
    scopes: ['openid', 'offline_access'],
    responseTypes: ['code'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    pkce: { required: () => cfg.pkce_required !== false },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page('C-SCALE Hub — sign out', `<h1>Sign out</h1>
<p class="sub">C-SCALE Hub · embedded identity provider</p>
<p>Do you want to sign out of the embedded identity provider?</p>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" class="secondary" form="op.logoutForm">No, stay signed in</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = messagePage('Signed out', 'You have signed out of the embedded identity provider.');
        },
      },
    },
    ttl: {
      AccessToken: ttl.access_token ?? 3600,
      IdToken: ttl.id_token ?? 3600,
      RefreshToken: ttl.refresh_token ?? 14 * 24 * 3600,
      Grant: ttl.refresh_token ?? 14 * 24 * 3600,
      Session: ttl.session ?? 8 * 3600,
      Interaction: 3600,
      AuthorizationCode: 60,
    },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: false,
    interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      const account = accounts.bySubject(sub);
      if (!account || account.disabled) return undefined;
      return { accountId: account.sub, claims: async () => claimsOf(account) };
    },
    // The configured clients are first-party: grant whatever OpenID scopes and claims they ask.
    async loadExistingGrant(ctx) {
      const { client, session, provider } = ctx.oidc;
      const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
      let grant = grantId ? await provider.Grant.find(grantId) : undefined;
      if (grant && grant.accountId !== session.accountId) grant = undefined;
      if (!firstParty.has(client.clientId)) return grant;
      grant ||= new provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
      const claims = [...ctx.oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      const description = out.error_description || 'The request could not be processed.';
      ctx.body = messagePage('Sign-in error', `${description} (${out.error || 'error'})`);
    },
  };
  if (store) configuration.adapter = (model) => store.adapterFor(model);
  return configuration;
}

async function readForm(req, limit = 16 * 1024) {
  const type = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') return null;
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) return null;
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// ------------------------------------------------------------------------ sign-in throttle

// Failed sign-ins are counted per account name (case-folded, known or not) and per client
// address. Past the free failures each further one doubles the wait before the next attempt
// is even checked (answered 429 with Retry-After meanwhile), up to maxDelay seconds; a
// success clears the account's count. Counts live in memory (a restart forgets them) and are
// forgotten `window` seconds after the last failure; the maps are bounded.
class LoginThrottle {
  constructor(opts = {}) {
    this.freePerAccount = opts.failures_per_account ?? 5;
    this.freePerAddress = opts.failures_per_address ?? 50;
    this.baseDelay = opts.base_delay ?? 1;
    this.maxDelay = opts.max_delay ?? 900;
    this.window = opts.window ?? 3600;
    this.capacity = opts.capacity ?? 10000;
    this.accounts = new Map();
    this.addresses = new Map();
  }

  static accountKey(username) {
    return String(username).normalize('NFKC').toLowerCase();
  }

  entry(map, key, now) {
    const e = map.get(key);
    if (e && now - e.last > this.window * 1000) {
      map.delete(key);
      return undefined;
    }
    return e;
  }

  // seconds to wait before an attempt for this account from this address is checked (0: go)
  wait(username, address, now = Date.now()) {
    let until = 0;
    for (const [map, key] of [[this.accounts, LoginThrottle.accountKey(username)], [this.addresses, address]]) {
      const e = this.entry(map, key, now);
      if (e) until = Math.max(until, e.until);
    }
    return until > now ? Math.ceil((until - now) / 1000) : 0;
  }

  failure(username, address, now = Date.now()) {
    for (const [map, key, free] of [
      [this.accounts, LoginThrottle.accountKey(username), this.freePerAccount],
      [this.addresses, address, this.freePerAddress],
    ]) {
      const e = this.entry(map, key, now) || { fails: 0, until: 0, last: now };
      e.fails += 1;
      e.last = now;
      if (e.fails > free) {
        const delay = Math.min(this.baseDelay * 2 ** (e.fails - free - 1), this.maxDelay);
        e.until = now + delay * 1000;
      }
      map.delete(key); // re-insert: Map order is the eviction order (oldest first)
      map.set(key, e);
      while (map.size > this.capacity) map.delete(map.keys().next().value);
    }
  }

  success(username) {
    this.accounts.delete(LoginThrottle.accountKey(username));
  }
}

// A submitted name as the log may show it: account names verbatim, anything else (a password
// typed into the wrong field, say) only as a short digest the operator can correlate.
function loggedName(username, account) {
  if (account) return username;
  const digest = crypto.createHash('sha256').update(String(username)).digest('hex').slice(0, 12);
  return `unknown:${digest}`;
}

function makeInteractionHandler(provider, accounts, throttle = new LoginThrottle()) {
  async function showLogin(req, res, details, extra = {}, status = 200) {
    const client = await provider.Client.find(details.params.client_id);
    send(res, status, loginPage({ uid: details.uid, clientName: client?.clientName, ...extra }));
  }

  async function autoConsent(req, res, details) {
    const { accountId } = details.session;
    const clientId = details.params.client_id;
    let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
    grant ||= new provider.Grant({ accountId, clientId });
    const missing = details.prompt.details || {};
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    const grantId = await grant.save();
    log('consent granted (first-party client)', { sub: accountId, client: clientId });
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  async function login(req, res, details) {
    const form = await readForm(req);
    if (!form) {
      send(res, 400, messagePage('Sign-in error', 'The sign-in form could not be read. Please try again.'));
      return;
    }
    const username = (form.get('username') || '').trim().slice(0, 256);
    const password = (form.get('password') || '').slice(0, 1024);
    const clientId = details.params.client_id;
    const ip = req.socket.remoteAddress;
    const account = username ? accounts.byUsername(username) : undefined;
    const wait = throttle.wait(username, ip);
    if (wait > 0) {
      log('login throttled', { user: loggedName(username, account), client: clientId, ip, retry_after: wait });
      const error = `Too many failed sign-ins for this account or from this address. Wait ${wait} seconds, then try again.`;
      const client = await provider.Client.find(details.params.client_id);
      send(res, 429, loginPage({ uid: details.uid, clientName: client?.clientName, username, error }),
        { 'Retry-After': String(wait) });
      return;
    }
    const ok = await verifyPassword(password, account?.password);
    if (!account || !ok) {
      throttle.failure(username, ip);
      log('login failed', { user: loggedName(username, account), client: clientId, ip, reason: account ? 'password' : 'unknown user' });
      await showLogin(req, res, details, { username, error: 'Invalid username or password.' }, 401);
      return;
    }
    throttle.success(username);
    if (account.disabled) {
      log('login refused', { user: username, client: clientId, ip, reason: 'disabled' });
      send(res, 403, messagePage(
        'Account disabled',
        `The account "${username}" is disabled, so it cannot sign in. Ask the administrator of this hub to enable it.`,
      ));
      return;
    }
    log('login ok', { user: username, sub: account.sub, client: clientId, ip });
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: account.sub, amr: ['pwd'] } },
      { mergeWithLastSubmission: false },
    );
  }

  return async function handle(req, res) {
    const url = new URL(req.url, 'http://placeholder');
    const match = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?\/?$/);
    if (!match) {
      send(res, 404, messagePage('Not found', 'There is nothing at this address.'));
      return;
    }
    const [, uid, action] = match;
    const method = req.method || 'GET';
    let details;
    try {
      details = await provider.interactionDetails(req, res);
      if (details.uid !== uid) throw new Error('interaction mismatch');
    } catch (err) {
      log('interaction not found', { uid, error: err.message });
      send(res, 400, messagePage(
        'Sign-in expired',
        'This sign-in request has expired or was opened in another browser. Go back to the hub and sign in again.',
      ));
      return;
    }
    try {
      if (!action && method === 'GET') {
        if (details.prompt.name === 'login') await showLogin(req, res, details);
        else if (details.prompt.name === 'consent') await autoConsent(req, res, details);
        else send(res, 400, messagePage('Sign-in error', 'This sign-in request cannot be completed here.'));
      } else if (action === 'login' && method === 'POST') {
        if (details.prompt.name !== 'login') {
          send(res, 400, messagePage('Sign-in error', 'This sign-in request is not waiting for a password.'));
          return;
        }
        await login(req, res, details);
      } else if (action === 'abort' && method === 'POST') {
        await provider.interactionFinished(req, res, {
          error: 'access_denied',
          error_description: 'The user cancelled the sign-in.',
        }, { mergeWithLastSubmission: false });
      } else {
        send(res, 405, messagePage('Not allowed', 'This address does not accept that request.'), {
          Allow: action ? 'POST' : 'GET',
        });
      }
    } catch (err) {
      log('interaction error', { uid, error: err.stack || err.message });
      if (!res.headersSent) {
        send(res, 500, messagePage('Sign-in error', 'Something went wrong on our side. Please try again.'));
      } else {
        res.end();
      }
    }
  };
}

async function main() {
  const configFile = process.argv[2];
  if (!configFile) {
    process.stderr.write('usage: node provider.mjs CONFIG.json\n');
    process.exit(2);
  }
  const cfg = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  for (const key of ['issuer', 'port', 'accounts_file', 'jwks_file', 'cookie_keys', 'clients']) {
    if (cfg[key] === undefined) throw new Error(`${configFile}: "${key}" is required`);
  }
  const Provider = await loadProviderClass();
  const accounts = new AccountStore(cfg.accounts_file);
  accounts.refresh();
  const store = cfg.store_file ? new FileStore(cfg.store_file) : new FileStore(null);
  const jwks = loadOrCreateJwks(cfg.jwks_file);
  const provider = new Provider(cfg.issuer, buildConfiguration(cfg, accounts, store, jwks));
  provider.on('server_error', (ctx, err) => log('server error', { path: ctx.path, error: err.stack || err.message }));
  provider.on('grant.error', (ctx, err) => log('token request refused', {
    error: err.message, detail: err.error_detail || err.error_description,
  }));
  provider.on('authorization.error', (ctx, err) => log('authorization refused', { error: err.message, detail: err.error_description }));
  const providerCallback = provider.callback();
  const interactions = makeInteractionHandler(provider, accounts, new LoginThrottle(cfg.login_throttle || {}));

  const server = http.createServer((req, res) => {
    if ((req.url || '').startsWith('/interaction/')) {
      interactions(req, res).catch((err) => {
        log('interaction failure', { error: err.stack || err.message });
        if (!res.headersSent) send(res, 500, messagePage('Sign-in error', 'Something went wrong. Please try again.'));
      });
      return;
    }
    providerCallback(req, res);
  });
  server.headersTimeout = 20_000;
  server.requestTimeout = 30_000;

  const stop = (signal) => {
    log('stopping', { signal });
    store.flushSync();
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, cfg.host || '127.0.0.1', resolve);
  });
  log('listening', { issuer: cfg.issuer, host: cfg.host || '127.0.0.1', port: cfg.port });
}

main().catch((err) => {
  process.stderr.write(`embedded OIDC provider failed to start: ${err.stack || err.message}\n`);
  process.exit(1);
});

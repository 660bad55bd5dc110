'use strict';
/**
 * Login for the operator UI (Dashboard 2.0): every HTTP request and WebSocket upgrade under the UI's paths,
 * including the dashboard's socket.io channel that carries widget actions, needs HTTP basic credentials of a
 * UI user; the user's role decides what the socket may do.
 *
 * Users file (NODE_RED_UI_USERS or NODE_RED_UI_USERS_FILE, see settings.js), one user per line:
 *
 *     <name> <role> scrypt:<N>:<r>:<p>:<salt base64>:<key base64>
 *
 * with role viewer, operator or expert. Lines starting with # are comments. trackerdcs_ops/uiusers.py writes these
 * lines (`dcs-ui-user add NAME ROLE`). Passwords are checked with scrypt on libuv's thread pool, so a login (or a
 * flood of wrong ones) never blocks the event loop the interlock runs on; a checked Authorization header is
 * remembered for CACHE_MS, a wrong one too (so retrying it costs nothing).
 *
 * Why below the HTTP router: socket.io answers its requests (polling, and the WebSocket upgrade) before Node-RED's
 * Express app and its httpNodeAuth/httpNodeMiddleware see them. `protectServer` therefore wraps the HTTP server's
 * own `emit`, so the check runs first for every 'request' and 'upgrade' on a protected path.
 */
const crypto = require('crypto');

const ROLES = ['viewer', 'operator', 'expert'];
const CACHE_MS = 5 * 60 * 1000;
const CACHE_MAX = 1000;
const FAILURES_PER_MINUTE = 20; // per client address; then 429 without checking (no password guessing at speed)
const REALM = 'trackerdcs operator UI';
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Parse a users file's text into Map name -> {name, role, hash}. Bad lines are reported in `errors`. */
function parseUsers(text) {
  const users = new Map();
  const errors = [];
  String(text || '').split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const [name, role, hash, extra] = line.split(/\s+/);
    if (extra !== undefined || !hash) errors.push(`line ${i + 1}: expected "<name> <role> <hash>"`);
    else if (!NAME_RE.test(name)) errors.push(`line ${i + 1}: bad user name ${JSON.stringify(name.slice(0, 40))}`);
    else if (!ROLES.includes(role)) errors.push(`line ${i + 1}: role must be one of ${ROLES.join(', ')}, not ${role}`);
    else if (!parseHash(hash)) errors.push(`line ${i + 1}: unreadable password hash for ${name}`);
    else users.set(name, { name, role, hash });
  });
  return { users, errors };
}

/** {N, r, p, salt, key} from "scrypt:N:r:p:salt:key", or null. */
function parseHash(text) {
  const parts = String(text).split(':');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [N, r, p] = parts.slice(1, 4).map(Number);
  const salt = Buffer.from(parts[4], 'base64');
  const key = Buffer.from(parts[5], 'base64');
  if (![N, r, p].every(Number.isInteger) || N < 1024 || r < 1 || p < 1 || salt.length < 8 || key.length < 16) return null;
  return { N, r, p, salt, key };
}

/** {name, password} from an "Authorization: Basic ..." header value, or null. */
function parseBasic(header) {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(String(header || ''));
  if (!m) return null;
  const text = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon <= 0) return null;
  return { name: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** The request path as Express would route it: decoded, repeated slashes collapsed, lower case. */
function normalisedPath(url) {
  let p = String(url || '/').split('?')[0];
  try { p = decodeURIComponent(p); } catch (e) { /* keep it raw: Express would not route it either */ }
  return p.replace(/\\/g, '/').replace(/\/+/g, '/').toLowerCase();
}

/** True when `url` is one of the protected `prefixes` ("/dashboard" covers "/dashboard" and "/dashboard/..."). */
function covers(prefixes, url) {
  const p = normalisedPath(url);
  return prefixes.some((prefix) => p === prefix || p.startsWith(prefix + '/'));
}

function scrypt(password, h) {
  return new Promise((resolve) => {
    crypto.scrypt(password, h.salt, h.key.length, { N: h.N, r: h.r, p: h.p, maxmem: 256 * h.N * h.r + 1024 * 1024 },
      (err, key) => resolve(!err && crypto.timingSafeEqual(key, h.key)));
  });
}

class UiAuth {
  /**
   * @param {Map} users  from parseUsers
   * @param {object} [opts]  prefixes (protected path prefixes), log (function(text)), now (ms clock, tests)
   */
  constructor(users, opts = {}) {
    this.users = users;
    this.prefixes = (opts.prefixes || ['/dashboard', '/dcs-auth']).map((p) => p.toLowerCase());
    this.log = opts.log || (() => {});
    this.now = opts.now || Date.now;
    this.cache = new Map(); // sha256(header) -> {user|null, until}
    this.failures = new Map(); // address -> [ms, ...]
  }

  covers(url) { return covers(this.prefixes, url); }

  /** Resolve to {user: {name, role}} or {status: 401|429, why}. */
  async authenticate(header, address) {
    const now = this.now();
    const recent = (this.failures.get(address) || []).filter((t) => now - t < 60000);
    if (recent.length >= FAILURES_PER_MINUTE) return { status: 429, why: 'too many failed logins; wait a minute' };
    const creds = parseBasic(header);
    if (!creds) return { status: 401, why: 'login required' };
    const digest = crypto.createHash('sha256').update(String(header)).digest('hex');
    const cached = this.cache.get(digest);
    let user = null;
    if (cached && cached.until > now) {
      user = cached.user;
    } else {
      const entry = this.users.get(creds.name);
      const hash = entry && parseHash(entry.hash);
      // unknown user: spend the same time on a dummy check, so names cannot be probed by timing
      const ok = await scrypt(creds.password, hash || DUMMY);
      user = ok && entry ? { name: entry.name, role: entry.role } : null;
      if (this.cache.size >= CACHE_MAX) this.cache.delete(this.cache.keys().next().value);
      this.cache.set(digest, { user, until: now + CACHE_MS });
    }
    if (!user) {
      recent.push(now);
      this.failures.set(address, recent);
      if (this.failures.size > CACHE_MAX) this.failures.delete(this.failures.keys().next().value);
      this.log(`UI login refused for ${JSON.stringify(creds.name.slice(0, 64))} from ${address}`);
      return { status: 401, why: 'wrong user name or password' };
    }
    return { user };
  }
}
const DUMMY = parseHash(`scrypt:16384:8:1:${Buffer.alloc(16).toString('base64')}:${Buffer.alloc(32).toString('base64')}`);

function refuse(event, args, result) {
  const headers = { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' };
  if (result.status === 401) headers['WWW-Authenticate'] = `Basic realm="${REALM}", charset="UTF-8"`;
  const body = `${result.why}\n`;
  if (event === 'request') {
    const res = args[1];
    res.writeHead(result.status, headers);
    res.end(body);
  } else {
    const socket = args[1];
    const text = result.status === 401 ? 'Unauthorized' : 'Too Many Requests';
    const lines = Object.entries({ ...headers, Connection: 'close', 'Content-Length': Buffer.byteLength(body) })
      .map(([k, v]) => `${k}: ${v}`);
    socket.end(`HTTP/1.1 ${result.status} ${text}\r\n${lines.join('\r\n')}\r\n\r\n${body}`);
  }
}

/**
 * Make `server` (an http.Server) check every 'request' and 'upgrade' event on a protected path before anything
 * else sees it. An authenticated request carries `req.dcsUser = {name, role}`; GET /dcs-auth/whoami answers it.
 */
function protectServer(server, auth) {
  const emit = server.emit;
  server.emit = function emitAfterLogin(event, ...args) {
    if ((event !== 'request' && event !== 'upgrade') || !auth.covers(args[0].url)) return emit.call(this, event, ...args);
    const req = args[0];
    const address = (req.socket && req.socket.remoteAddress) || '?';
    auth.authenticate(req.headers.authorization, address).then((result) => {
      if (!result.user) return refuse(event, args, result);
      req.dcsUser = result.user;
      if (event === 'request' && normalisedPath(req.url) === '/dcs-auth/whoami') {
        args[1].writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
        return args[1].end(JSON.stringify(result.user));
      }
      return emit.call(this, event, ...args);
    }).catch((err) => {
      auth.log(`UI login check failed: ${err && err.message}`);
      refuse(event, args, { status: 401, why: 'login check failed' });
    });
    return true;
  };
  return server;
}

/** Wrap http.createServer so the server Node-RED creates is protected (settings.js runs before it exists). */
function protectHttpServers(http, auth) {
  const create = http.createServer;
  http.createServer = function createProtectedServer(...args) {
    return protectServer(create.apply(this, args), auth);
  };
}

/** socket.io events from the browser that make the flows act (viewer may send none of them). */
const ACTION_EVENTS = ['widget-action', 'widget-change', 'widget-send'];
/** The only socket.io event a viewer's browser may send: asking for the widgets' current state. */
const VIEWER_EVENTS = ['widget-load'];

/**
 * socket.io middleware for Dashboard 2.0 (settings.dashboard.ioMiddleware). Keeps the dashboard's own checks
 * (no direct WebSocket without the polling handshake, no cross-origin socket), refuses a socket without a logged
 * in user, and on every action event replaces the message's `_client` with the logged-in user, so the flows see
 * who acted and a browser cannot claim to be someone else. A viewer's socket may
 * only load widget state; everything else it sends is dropped here.
 */
function ioMiddleware(log) {
  return function dcsSocketLogin(socket, next) {
    if (socket.client.conn.request.url.indexOf('transport=websocket') !== -1) {
      socket.client.conn.close();
      return undefined;
    }
    if (socket.handshake.xdomain !== false) return socket.disconnect(true);
    const user = socket.request.dcsUser;
    if (!user) return next(new Error('login required'));
    socket.use((packet, proceed) => {
      if (user.role === 'viewer' && !VIEWER_EVENTS.includes(packet[0])) {
        log(`UI event ${String(packet[0]).slice(0, 40)} from viewer ${user.name} dropped`);
        return undefined;
      }
      if (!ACTION_EVENTS.includes(packet[0])) return proceed();
      const i = packet.length - 1; // the message is the last argument: (id, msg) or (id, value)
      const msg = packet[i];
      if (packet[0] === 'widget-change') return proceed(); // a value, not a message: the flows get no user for it
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
        packet[i] = { payload: msg, _client: { user: { ...user } } };
      } else {
        packet[i] = { ...msg, _client: { user: { ...user } } };
      }
      return proceed();
    });
    return next();
  };
}

module.exports = {
  ROLES, parseUsers, parseHash, parseBasic, normalisedPath, covers, UiAuth, protectServer, protectHttpServers,
  ioMiddleware, ACTION_EVENTS,
};

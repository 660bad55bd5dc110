/**
 * Node-RED settings for the trackerdcs operator gateway (interlocks + operator UI).
 *
 * Start: `./run` (or `npx node-red --settings settings.js`). Everything secret comes from the environment or
 * from files named by it; nothing secret lives in git:
 *
 *   NODE_RED_CREDENTIAL_SECRET / _FILE   key that encrypts flows_cred.json (required)
 *   NODE_RED_ADMIN_USER                  editor user (default "admin")
 *   NODE_RED_ADMIN_HASH / _FILE          bcrypt hash of the editor password; without it editor + admin API are off
 *   NODE_RED_UI_USERS / _FILE            operator UI logins, one "<name> <role> <scrypt hash>" per line (roles viewer,
 *                                        operator, expert; written by `dcs-ui-user`, see docs/security.md). Without
 *                                        any user the UI answers 401 to everyone: there is no anonymous UI.
 *   MQTT_HOST, MQTT_PORT, MQTT_USER, MQTT_PASSWORD / MQTT_PASSWORD_FILE, MQTT_CLIENT_ID
 *       (fall back to the DCS_MQTT_* variables every trackerdcs process understands)
 *   NODE_RED_USER_DIR (default ./var), NODE_RED_FLOW_FILE (default ./flows.json), NODE_RED_HOST, NODE_RED_PORT
 *   INTERLOCK_BATH_TEMP_MAX (°C, 25), INTERLOCK_STALE_S (60), INTERLOCK_LV_OFF_DELAY_S (10),
 *   INTERLOCK_DEWPOINT_MARGIN_K (2), INTERLOCK_ENV_STALE_S (120)
 *
 * flows_cred.json (in the user dir) is written here when missing or not readable with the current secret. It
 * holds, encrypted, only the references ${MQTT_USER}/${MQTT_PASSWORD}; Node-RED resolves them at start.
 */
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');

const env = process.env;

// ------------------------------------------------------------------ TCP_NODELAY on outgoing connections
// A Node.js socket starts with Nagle's algorithm on, and the MQTT client inside Node-RED's MQTT nodes (mqtt.js)
// never turns it off. When a QoS 1 message arrives (julabo/status), the client writes its PUBACK and, a moment
// later, the interlock's own publishes (caen/cmd/hv_off, interlock/status): Nagle holds those small writes back
// until the broker has acknowledged the PUBACK's segment, and the broker's kernel delays that ACK (delayed ACK,
// about 40 ms on Linux). Measured: chiller fault -> hv_off out of Node-RED p50 41 ms with Nagle, see
// docs/benchmarks.md. Every socket this process connects (the broker, also over TLS) therefore gets TCP_NODELAY;
// the cost is a few more small packets, which an interlock can afford. Sockets it accepts (editor, dashboard)
// are Node's HTTP server's, which sets TCP_NODELAY itself.
{
  const net = require('net');
  const connect = net.Socket.prototype.connect;
  net.Socket.prototype.connect = function connectWithNoDelay(...args) {
    const socket = connect.apply(this, args);
    this.setNoDelay(true);
    return socket;
  };
}

function secret(name) {
  if (env[name]) return env[name].trim();
  const file = env[`${name}_FILE`];
  if (file) return fs.readFileSync(file, 'utf8').trim();
  return undefined;
}
function setDefault(name, value) {
  if (env[name] === undefined || env[name] === '') {
    if (value !== undefined && value !== null) env[name] = String(value);
  }
}

// ------------------------------------------------------------------ MQTT connection (env for the broker node)
setDefault('MQTT_HOST', env.DCS_MQTT_HOST || '127.0.0.1');
setDefault('MQTT_PORT', env.DCS_MQTT_PORT || '1883');
setDefault('MQTT_USER', env.DCS_MQTT_USERNAME || 'nodered');
setDefault('MQTT_CLIENT_ID', env.DCS_MQTT_CLIENT_ID || `trackerdcs-node-red-${os.hostname()}`);
if (!env.MQTT_PASSWORD) {
  const file = env.MQTT_PASSWORD_FILE || env.DCS_MQTT_PASSWORD_FILE;
  if (file) env.MQTT_PASSWORD = fs.readFileSync(file, 'utf8').trim();
  else if (env.DCS_MQTT_PASSWORD) env.MQTT_PASSWORD = env.DCS_MQTT_PASSWORD;
}
// ------------------------------------------------------------------ interlock limits (see docs/services/gateway.md)
setDefault('INTERLOCK_BATH_TEMP_MAX', '25');
setDefault('INTERLOCK_STALE_S', '60');
setDefault('INTERLOCK_LV_OFF_DELAY_S', '10');
setDefault('INTERLOCK_DEWPOINT_MARGIN_K', '2');
setDefault('INTERLOCK_ENV_STALE_S', '120');

// ------------------------------------------------------------------ files
const userDir = path.resolve(env.NODE_RED_USER_DIR || path.join(__dirname, 'var'));
const flowFile = path.resolve(env.NODE_RED_FLOW_FILE || path.join(__dirname, 'flows.json'));
fs.mkdirSync(userDir, { recursive: true });

const credentialSecret = secret('NODE_RED_CREDENTIAL_SECRET');
if (!credentialSecret) {
  throw new Error('NODE_RED_CREDENTIAL_SECRET (or NODE_RED_CREDENTIAL_SECRET_FILE) is not set; refusing to start');
}

/** Write <userDir>/<flows>_cred.json with the broker credentials as ${ENV} references, encrypted. */
function ensureCredentials() {
  const base = path.basename(flowFile, path.extname(flowFile));
  const credFile = path.join(userDir, `${base}_cred${path.extname(flowFile)}`);
  const key = crypto.createHash('sha256').update(credentialSecret).digest();
  if (fs.existsSync(credFile)) {
    try {
      const enc = JSON.parse(fs.readFileSync(credFile, 'utf8')).$;
      const decipher = crypto.createDecipheriv('aes-256-ctr', key, Buffer.from(enc.substring(0, 32), 'hex'));
      JSON.parse(decipher.update(enc.substring(32), 'base64', 'utf8') + decipher.final('utf8'));
      return; // readable with this secret: keep whatever the operator configured
    } catch (e) {
      console.warn(`[trackerdcs] ${credFile} unreadable with the current secret: rewriting it`);
    }
  }
  const creds = { 'dcs-broker': { user: '${MQTT_USER}', password: '${MQTT_PASSWORD}' } };
  const iv = crypto.randomBytes(16);
  const cipher = crypto.createCipheriv('aes-256-ctr', key, iv);
  const data = iv.toString('hex') + cipher.update(JSON.stringify(creds), 'utf8', 'base64') + cipher.final('base64');
  fs.writeFileSync(credFile, JSON.stringify({ $: data }), { mode: 0o600 });
}
ensureCredentials();

// ------------------------------------------------------------------ authentication
const adminHash = secret('NODE_RED_ADMIN_HASH');
if (!adminHash) console.warn('[trackerdcs] NODE_RED_ADMIN_HASH not set: the flow editor and admin API are disabled');

// Operator UI login (node-red/auth/uiauth.js): checked below Express, on the HTTP server itself, so that the
// dashboard's socket.io channel (which answers before Express) is covered too; roles are enforced per socket.
const uiauth = require('./auth/uiauth');
const uiUsers = uiauth.parseUsers(secret('NODE_RED_UI_USERS') || '');
uiUsers.errors.forEach((e) => console.warn(`[trackerdcs] NODE_RED_UI_USERS ${e}`));
if (uiUsers.users.size === 0) console.warn('[trackerdcs] no operator UI users (NODE_RED_UI_USERS): the UI refuses everyone');
const uiLog = (text) => console.warn(`[trackerdcs] ${text}`);
uiauth.protectHttpServers(require('http'), new uiauth.UiAuth(uiUsers.users, { log: uiLog }));

module.exports = {
  userDir,
  flowFile,
  nodesDir: [path.join(__dirname, 'nodes')],
  credentialSecret,
  flowFilePretty: true,
  uiHost: env.NODE_RED_HOST || '127.0.0.1',
  uiPort: Number(env.NODE_RED_PORT || 1880),
  // Without an admin password hash there is no editor and no admin HTTP API at all (disableEditor alone
  // would leave /flows open).
  httpAdminRoot: adminHash ? '/' : false,
  disableEditor: !adminHash,
  adminAuth: adminHash
    ? { type: 'credentials', users: [{ username: env.NODE_RED_ADMIN_USER || 'admin', password: adminHash, permissions: '*' }] }
    : undefined,
  functionExternalModules: false,
  functionTimeout: 5,
  exportGlobalContextKeys: false,
  externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
  diagnostics: { enabled: false, ui: false },
  telemetry: { enabled: false },
  runtimeState: { enabled: false, ui: false },
  logging: { console: { level: env.NODE_RED_LOG_LEVEL || 'info', metrics: false, audit: false } },
  editorTheme: {
    projects: { enabled: false },
    palette: { editable: false },
    tours: false,
    header: { title: 'trackerdcs gateway' },
  },
  dashboard: { ioMiddleware: uiauth.ioMiddleware(uiLog) },
  mqttReconnectTime: 1000,
};

'use strict';
// Specification of the operator UI login (auth/uiauth.js): users file, paths it covers, password checks, and the
// HTTP server wrapper that runs before any route (and before socket.io) sees a request.
const assert = require('assert');
const crypto = require('crypto');
const http = require('http');
const net = require('net');
const uiauth = require('../auth/uiauth');

function hash(password) {
  const salt = crypto.randomBytes(16);
  const key = crypto.scryptSync(password, salt, 32, { N: 16384, r: 8, p: 1 });
  return `scrypt:16384:8:1:${salt.toString('base64')}:${key.toString('base64')}`;
}
const basic = (name, password) => `Basic ${Buffer.from(`${name}:${password}`).toString('base64')}`;

describe('uiauth: operator UI login', () => {
  const users = uiauth.parseUsers(`# people\nalice operator ${hash('alice-secret')}\nvictor viewer ${hash('victor-secret')}\n`);

  it('reads the users file and names each bad line', () => {
    assert.deepStrictEqual([...users.users.keys()], ['alice', 'victor']);
    assert.strictEqual(users.users.get('victor').role, 'viewer');
    const bad = uiauth.parseUsers(`bob boss ${hash('x')}\ncarol operator bcrypt$2a$xyz\n../x operator ${hash('x')}\nonly-two fields`);
    assert.strictEqual(bad.users.size, 0);
    assert.deepStrictEqual(bad.errors.map((e) => e.split(':')[0]), ['line 1', 'line 2', 'line 3', 'line 4']);
  });

  it('covers the dashboard however its path is spelled, and nothing else', () => {
    const covers = (url) => uiauth.covers(['/dashboard', '/dcs-auth'], url);
    for (const url of ['/dashboard', '/dashboard/stand', '/Dashboard/stand', '//dashboard', '/%64ashboard/x',
      '/dashboard/socket.io/?EIO=4&transport=polling', '/dcs-auth/whoami', '/dashboard?x=1']) {
      assert.ok(covers(url), url);
    }
    for (const url of ['/', '/flows', '/dashboardx', '/red/about']) assert.ok(!covers(url), url);
  });

  it('accepts the right password, refuses a wrong one or an unknown user, then slows a guesser down', async () => {
    let now = 1000;
    const auth = new uiauth.UiAuth(users.users, { now: () => now });
    assert.deepStrictEqual(await auth.authenticate(basic('alice', 'alice-secret'), 'a'), { user: { name: 'alice', role: 'operator' } });
    assert.strictEqual((await auth.authenticate(basic('alice', 'wrong'), 'a')).status, 401);
    assert.strictEqual((await auth.authenticate(basic('nobody', 'x'), 'a')).status, 401);
    assert.strictEqual((await auth.authenticate(undefined, 'a')).status, 401);
    for (let i = 0; i < 20; i++) await auth.authenticate(basic('alice', `guess-${i % 3}`), 'b');
    assert.strictEqual((await auth.authenticate(basic('alice', 'alice-secret'), 'b')).status, 429);
    assert.ok((await auth.authenticate(basic('alice', 'alice-secret'), 'a')).user, 'other addresses are not blocked');
    now += 61000;
    assert.ok((await auth.authenticate(basic('alice', 'alice-secret'), 'b')).user, 'a minute later it may try again');
  });

  it('guards requests and WebSocket upgrades on the server before any listener sees them', async () => {
    const server = uiauth.protectServer(http.createServer((req, res) => res.end(`route ${req.url} ${req.dcsUser ? req.dcsUser.name : '-'}`)),
      new uiauth.UiAuth(users.users));
    let upgrades = 0;
    server.on('upgrade', (req, socket) => { upgrades++; socket.end('HTTP/1.1 101 Switching Protocols\r\n\r\n'); });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = server.address().port;
    const get = (path, authorization) => new Promise((resolve, reject) => {
      http.get({ port, host: '127.0.0.1', path, headers: authorization ? { authorization } : {} }, (res) => {
        let body = '';
        res.on('data', (d) => { body += d; }).on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }));
      }).on('error', reject);
    });
    const upgrade = (authorization) => new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.write(['GET /dashboard/socket.io/?EIO=4&transport=websocket HTTP/1.1',
        'Host: x', 'Upgrade: websocket', 'Connection: Upgrade', ...(authorization ? [`Authorization: ${authorization}`] : []), '', ''].join('\r\n')));
      let text = '';
      socket.on('data', (d) => { text += d; }).on('close', () => resolve(text.split('\r\n')[0]));
    });
    try {
      const anonymous = await get('/dashboard/stand');
      assert.strictEqual(anonymous.status, 401);
      assert.match(anonymous.headers['www-authenticate'], /^Basic realm=/);
      assert.strictEqual((await get('/other')).body, 'route /other -', 'paths outside the UI are not touched');
      assert.strictEqual((await get('/dashboard/stand', basic('alice', 'alice-secret'))).body, 'route /dashboard/stand alice');
      assert.deepStrictEqual(JSON.parse((await get('/dcs-auth/whoami', basic('victor', 'victor-secret'))).body), { name: 'victor', role: 'viewer' });
      assert.match(await upgrade(), / 401 /);
      assert.strictEqual(upgrades, 0);
      assert.match(await upgrade(basic('alice', 'alice-secret')), / 101 /);
      assert.strictEqual(upgrades, 1);
    } finally {
      server.close();
    }
  });
});

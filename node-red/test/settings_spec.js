'use strict';
// Specification of settings.js beyond Node-RED's own options: the broker connection has no Nagle delay.
const assert = require('assert');
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

/**
 * In a fresh Node.js process (optionally after loading settings.js, as Node-RED does), connect to a local
 * server the way mqtt.js opens its broker connection (net.createConnection) and report whether that socket
 * has TCP_NODELAY. Node.js keeps the flag in the socket's kSetNoDelay slot (no public getter).
 */
function connectionNoDelay(loadSettings) {
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-settings-'));
  const script = `
    const net = require('net');
    if (${loadSettings}) require(${JSON.stringify(path.join(__dirname, '..', 'settings.js'))});
    const server = net.createServer((s) => s.end()).listen(0, '127.0.0.1', () => {
      const socket = net.createConnection({ port: server.address().port, host: '127.0.0.1' });
      socket.on('connect', () => {
        const slot = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'kSetNoDelay');
        if (!slot) throw new Error('this Node.js keeps no kSetNoDelay slot: update the test');
        process.stdout.write(JSON.stringify(socket[slot]));
        socket.destroy();
        server.close();
      });
    });`;
  const env = { ...process.env, NODE_RED_USER_DIR: userDir, NODE_RED_CREDENTIAL_SECRET: 'test-only', MQTT_PASSWORD: 'x' };
  try {
    return JSON.parse(execFileSync(process.execPath, ['-e', script], { env, encoding: 'utf8', timeout: 10000 }));
  } finally {
    fs.rmSync(userDir, { recursive: true, force: true });
  }
}

describe('settings.js: broker connection', () => {
  it('opens outgoing TCP connections with TCP_NODELAY (no Nagle delay on the interlock publishes)', () => {
    assert.strictEqual(connectionNoDelay(true), true);
  });
  it('(control) plain Node.js leaves Nagle on, which the check above detects', () => {
    assert.strictEqual(connectionNoDelay(false), false);
  });
});

'use strict';
// The real flows.json nodes, run inside Node-RED by node-red-node-test-helper.
const assert = require('assert');
const path = require('path');
const { execFileSync } = require('child_process');
const helper = require('node-red-node-test-helper');
const functionNode = require('@node-red/nodes/core/function/10-function.js');
const interlockNode = require('../nodes/dcs-interlock/interlock.js');
const flows = require('../flows.json');

helper.init(require.resolve('node-red'));

const byId = (id) => JSON.parse(JSON.stringify(flows.find((n) => n.id === id)));
const TAB = { id: 'test-tab', type: 'tab', label: 'test' };
/** The flow node `id` moved to the test tab with its outputs rewired to helper nodes. */
function take(id, wires) {
  const n = byId(id);
  n.z = TAB.id;
  n.wires = wires;
  return n;
}
const helperNode = (id) => ({ id, type: 'helper', z: TAB.id });
function collect(node, n, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const t = setTimeout(() => reject(new Error(`expected ${n} messages, got ${got.length}`)), timeoutMs);
    node.on('input', (msg) => {
      got.push(msg);
      if (got.length === n) { clearTimeout(t); resolve(got); }
    });
  });
}

describe('flows.json', function () {
  this.timeout(10000);
  before((done) => { helper.startServer(done); });
  after((done) => { helper.stopServer(done); });
  afterEach(() => helper.unload());

  it('is what tools/build-flows.js generates', () => {
    execFileSync(process.execPath, [path.join(__dirname, '..', 'tools', 'build-flows.js'), '--check']);
  });

  it('keeps MQTT credentials out of the flow file and uses ${ENV} for the broker', () => {
    const broker = flows.find((n) => n.type === 'mqtt-broker');
    assert.strictEqual(broker.credentials, undefined);
    assert.strictEqual(broker.broker, '${MQTT_HOST}');
    assert.ok(!JSON.stringify(flows).match(/password"\s*:/i), 'no password property in flows.json');
  });

  it('subscribes the interlock to the chiller, CAEN, sensors and acknowledgements', () => {
    const topics = flows.filter((n) => n.type === 'mqtt in' && n.wires[0].includes('il-node')).map((n) => n.topic);
    for (const t of ['julabo/status', 'julabo/availability', 'env/+', 'interlock/cmd/acknowledge', 'interlock/status']) {
      assert.ok(topics.includes(t), `interlock listens to ${t}`);
    }
  });

  describe('interlock node inside Node-RED', () => {
    it('sends caen/cmd/hv_off then the trip event when the chiller stops', async () => {
      const il = take('il-node', [['out']]);
      Object.assign(il, { startupGraceS: '0', lvOffDelayS: '0.2', tickMs: '20' });
      await helper.load([interlockNode], [il, TAB, helperNode('out')]);
      const out = helper.getNode('out');
      const node = helper.getNode('il-node');
      node.receive({ topic: 'julabo/status', payload: { state: 'RUNNING', connected: true, bath_temp: -20, ts: Date.now() / 1000 } });
      const seen = [];
      const lvOff = new Promise((resolve) => out.on('input', (msg) => {
        seen.push(msg);
        if (msg.topic === 'caen/cmd/lv_off') resolve();
      }));
      node.receive({ topic: 'julabo/status', payload: { state: 'STOPPED', connected: true, bath_temp: -20, ts: Date.now() / 1000 } });
      await lvOff;
      const topics = seen.map((m) => m.topic);
      const hv = topics.indexOf('caen/cmd/hv_off');
      assert.ok(hv >= 0, 'HV off sent');
      assert.ok(hv < topics.indexOf('caen/cmd/lv_off'), 'HV off before LV off');
      const trip = seen.find((m) => m.topic === 'interlock/event' && m.payload.kind === 'trip');
      assert.strictEqual(trip.payload.reason, 'chiller_not_running');
      assert.strictEqual(seen[hv].qos, 1);
      const status = seen.filter((m) => m.topic === 'interlock/status').pop();
      assert.strictEqual(status.retain, true);
      assert.strictEqual(status.payload.state, 'TRIPPED');
    });

    it('survives garbage input and keeps evaluating', async () => {
      const il = take('il-node', [['out']]);
      Object.assign(il, { startupGraceS: '0', tickMs: '20' });
      await helper.load([interlockNode], [il, TAB, helperNode('out')]);
      const node = helper.getNode('il-node');
      node.receive({ payload: 'no topic' });
      node.receive({ topic: 'julabo/status', payload: Buffer.from('\xff{{') });
      node.receive({ topic: 'env/box', payload: 42 });
      const out = helper.getNode('out');
      const hv = new Promise((resolve) => out.on('input', (m) => m.topic === 'caen/cmd/hv_off' && resolve(m)));
      node.receive({ topic: 'julabo/status', payload: { state: 'ALARM', status_code: -14, status_text: 'EXCESS TEMPERATURE PROTECTOR ALARM', ts: Date.now() / 1000 } });
      await hv;
    });

    it('takes its limits from ${ENV} properties, defaults when unset', async () => {
      process.env.TEST_BATH_MAX = '-25';
      const il = take('il-node', [['out']]);
      Object.assign(il, { bathTempMax: '${TEST_BATH_MAX}', staleS: '${TEST_UNSET_VAR}', startupGraceS: '0' });
      await helper.load([interlockNode], [il, TAB, helperNode('out')]);
      const node = helper.getNode('il-node');
      assert.strictEqual(node.interlock.cfg.bathTempMax, -25);
      assert.strictEqual(node.interlock.cfg.staleS, 60);
      delete process.env.TEST_BATH_MAX;
    });
  });

  describe('operator UI command guard', () => {
    async function guard() {
      await helper.load([functionNode], [take('ui-guard', [['mqtt'], ['refused']]), TAB, helperNode('mqtt'), helperNode('refused')]);
      return { g: helper.getNode('ui-guard'), mqtt: helper.getNode('mqtt'), refused: helper.getNode('refused') };
    }

    // what node-red/auth/uiauth.js puts on every widget message of a logged-in person (plus Dashboard's socketIp)
    const as = (name, role) => ({ user: { name, role }, socketId: 's1', socketIp: '127.0.0.1' });

    it('forwards a module HV-off with an id, the login and the browser address, at QoS 1', async () => {
      const { g, mqtt } = await guard();
      const got = collect(mqtt, 1);
      g.receive({ topic: 'caen/cmd/hv_off', payload: { modules: ['M1'], by: 'mallory' }, _client: as('alice', 'operator') });
      const [msg] = await got;
      assert.deepStrictEqual(msg.payload.modules, ['M1']);
      assert.match(msg.payload.id, /^ui-/);
      assert.strictEqual(msg.payload.by, 'alice');
      assert.strictEqual(msg.payload.from, 'ui 127.0.0.1');
      assert.strictEqual(msg.qos, 1);
    });

    it('acknowledges the interlock in the name of the login, not of a typed name', async () => {
      const { g, mqtt } = await guard();
      const got = collect(mqtt, 1);
      g.receive({ topic: 'interlock/cmd/acknowledge', payload: { operator: 'somebody' }, _client: as('alice', 'operator') });
      const [msg] = await got;
      assert.strictEqual(msg.payload.operator, 'alice');
    });

    it('refuses a message without a logged-in user, and what the role may not send', async () => {
      const { g, mqtt, refused } = await guard();
      let forwarded = false;
      mqtt.on('input', () => { forwarded = true; });
      const got = collect(refused, 3);
      g.receive({ topic: 'caen/cmd/hv_off', payload: {} });
      g.receive({ topic: 'caen/cmd/hv_off', payload: {}, _client: as('victor', 'viewer') });
      g.receive({ topic: 'caen/cmd/set', payload: {}, _client: as('alice', 'operator') });
      const msgs = await got;
      assert.match(msgs[0].payload, /no logged-in user/);
      assert.match(msgs[1].payload, /victor \(viewer\) may not send caen\/cmd\/hv_off/);
      assert.match(msgs[2].payload, /alice \(operator\) may not send caen\/cmd\/set/);
      assert.strictEqual(forwarded, false);
    });

    it('lets an expert send what the UI offers beyond the operator role', async () => {
      const { g, mqtt } = await guard();
      const got = collect(mqtt, 1);
      g.receive({ topic: 'caen/cmd/set', payload: { channel: 'M1_hv', param: 'V0Set', value: 5 }, _client: as('erin', 'expert') });
      const [msg] = await got;
      assert.strictEqual(msg.payload.by, 'erin');
    });

    it('refuses HV on while the interlock is not OK', async () => {
      const { g, mqtt, refused } = await guard();
      g.context().flow.set('model', { status: { interlock: { state: 'ACK_PENDING' } }, events: [] });
      let forwarded = false;
      mqtt.on('input', () => { forwarded = true; });
      const got = collect(refused, 1);
      g.receive({ topic: 'caen/cmd/hv_on', payload: {}, _client: as('alice', 'operator') });
      const [msg] = await got;
      assert.match(msg.payload, /interlock is ACK_PENDING/);
      assert.strictEqual(forwarded, false);
    });

    it('refuses topics that are not service commands', async () => {
      const { g, refused } = await guard();
      const got = collect(refused, 2);
      g.receive({ topic: 'caen/status', payload: {} });
      g.receive({ topic: 'caen/cmd/format_disk', payload: {} });
      const msgs = await got;
      assert.ok(msgs.every((m) => /unknown command topic/.test(m.payload)));
    });

    it('forwards the burn-in controls and refuses a burn-in start from the page', async () => {
      const { g, mqtt, refused } = await guard();
      const sent = collect(mqtt, 4);
      for (const name of ['pause', 'resume', 'skip', 'abort']) {
        g.receive({ topic: `burnin/cmd/${name}`, payload: { operator: 'mallory' }, _client: as('alice', 'operator') });
      }
      const msgs = await sent;
      assert.deepStrictEqual(msgs.map((m) => m.topic), ['burnin/cmd/pause', 'burnin/cmd/resume', 'burnin/cmd/skip', 'burnin/cmd/abort']);
      // in the logged-in person's name, whatever the page typed
      assert.ok(msgs.every((m) => m.payload.operator === 'alice' && m.payload.by === 'alice' && /^ui-/.test(m.payload.id)));
      const no = collect(refused, 1);
      g.receive({ topic: 'burnin/cmd/start', payload: { recipe: 'standard-burnin' }, _client: as('alice', 'operator') });
      assert.match((await no)[0].payload, /unknown command topic burnin\/cmd\/start/);
    });
  });

  describe('operator UI model', () => {
    it('folds statuses, modules, events and sensors into one model for the widgets', async () => {
      await helper.load([functionNode], [take('ui-collect', [['ui']]), TAB, helperNode('ui')]);
      const c = helper.getNode('ui-collect');
      const got = collect(helper.getNode('ui'), 1);
      c.receive({ topic: 'caen/availability', payload: 'online' });
      c.receive({ topic: 'caen/status', payload: Buffer.from('{"state":"HV_ON","modules_hv_on":1,"ts":1}') });
      c.receive({ topic: 'caen/status/module/M1', payload: { module: 'M1', state: 'HV_ON', hv_vmon: 300 } });
      c.receive({ topic: 'caen/event', payload: { kind: 'trip', severity: 'alarm', message: 'M1 tripped', ts: 2 } });
      c.receive({ topic: 'env/box', payload: { temperature: 20, humidity: 50, ts: 3 } });
      c.receive({ topic: 'julabo/status', payload: '{broken' });
      const [msg] = await got;
      const m = msg.payload;
      assert.strictEqual(m.services.caen.availability, 'online');
      assert.strictEqual(m.services.caen.state, 'HV_ON');
      assert.strictEqual(m.modules.M1.hv_vmon, 300);
      assert.strictEqual(m.events[0].message, 'M1 tripped');
      assert.ok(Math.abs(m.env.box.dewpoint - 9.26) < 0.1);
      assert.strictEqual(m.status.julabo, undefined, 'unreadable status ignored');
    });

    it('keeps the burn-in steps, the newest IV curve per module and the burn-in events for the burn-in page', async () => {
      const outs = ['ui', 'bi-status', 'bi-events', 'bi-iv', 'bi-steps'];
      await helper.load([functionNode], [take('ui-collect', outs.map((o) => [o])), TAB, ...outs.map(helperNode)]);
      const c = helper.getNode('ui-collect');
      const got = Promise.all(outs.slice(1).map((o) => collect(helper.getNode(o), 1)));
      const forStand = collect(helper.getNode('ui'), 1);
      const steps = { uid: 'b1', recipe: 'sim-short', steps: [{ step: 1, name: 'chiller on', outcome: 'done' }] };
      c.receive({ topic: 'burnin/status', payload: { state: 'RUNNING', step: 2, steps: 11, ts: 1 } });
      c.receive({ topic: 'burnin/status/steps', payload: JSON.stringify(steps) });
      c.receive({ topic: 'burnin/status/iv/M1', payload: { module: 'M1', points: [{ set_v: -10, vmon: -10, imon: -0.03 }] } });
      c.receive({ topic: 'burnin/status/iv/M2', payload: { module: 'M2', points: [] } });
      c.receive({ topic: 'burnin/status/iv/M2', payload: '' });
      c.receive({ topic: 'burnin/status/iv/M3', payload: { module: 'M3' } });
      c.receive({ topic: 'burnin/event', payload: { kind: 'step_end', message: 'step 1 chiller on: done', ts: 2 } });
      c.receive({ topic: 'caen/event', payload: { kind: 'trip', severity: 'alarm', message: 'M1 tripped', ts: 3 } });
      const [[status], [events], [iv], [forSteps]] = await got;
      assert.strictEqual(status.payload.status.burnin.step, 2);
      assert.deepStrictEqual(Object.keys(status.payload), ['status'], 'the status widget gets the status only');
      assert.deepStrictEqual(JSON.parse(JSON.stringify(forSteps.payload.burnin.steps)), steps, 'parsed from the JSON text');
      assert.strictEqual(forSteps.payload.status.burnin.step, 2, 'the steps widget knows the current step');
      const curves = iv.payload.burnin.iv;
      assert.deepStrictEqual([...Object.keys(curves)], ['M1'], 'a cleared curve is gone, one without points ignored');
      assert.strictEqual(curves.M1.points[0].imon, -0.03);
      assert.deepStrictEqual([...events.payload.burnin.events.map((e) => e.message)], ['step 1 chiller on: done'],
        'only burn-in events');
      const [stand] = await forStand;
      assert.strictEqual(stand.payload.burnin, undefined, 'no steps and IV curves for the stand page');
      assert.strictEqual(stand.payload.events.length, 2, 'burn-in events are in the common list too');
      assert.strictEqual(stand.payload.status.burnin.state, 'RUNNING');
    });

    it('sends a burn-in widget its part only when that part changed', async () => {
      const outs = ['ui', 'bi-status', 'bi-events', 'bi-iv', 'bi-steps'];
      await helper.load([functionNode], [take('ui-collect', outs.map((o) => [o])), TAB, ...outs.map(helperNode)]);
      const c = helper.getNode('ui-collect');
      const count = {};
      outs.forEach((o) => { count[o] = 0; helper.getNode(o).on('input', () => { count[o] += 1; }); });
      const pause = () => new Promise((resolve) => setTimeout(resolve, 300));
      c.receive({ topic: 'caen/status', payload: { state: 'HV_ON', ts: 1 } });
      await pause();
      assert.deepStrictEqual({ ...count }, { ui: 1, 'bi-status': 0, 'bi-events': 0, 'bi-iv': 0, 'bi-steps': 0 });
      c.receive({ topic: 'burnin/status', payload: { state: 'RUNNING', uid: 'b1', step: 3, elapsed_s: 10, ts: 1 } });
      await pause();
      c.receive({ topic: 'burnin/status', payload: { state: 'RUNNING', uid: 'b1', step: 3, elapsed_s: 11, ts: 2 } });
      await pause();
      assert.strictEqual(count['bi-status'], 2, 'every status goes to the status widget');
      assert.strictEqual(count['bi-steps'], 1, 'the steps list again only when the current step changes');
      assert.strictEqual(count['bi-iv'] + count['bi-events'], 0);
    });
  });
});

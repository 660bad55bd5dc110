'use strict';
// Specification of the interlock logic (pure, no Node-RED): what the operator's hardware gets.
const assert = require('assert');
const { Interlock, dewPoint, normaliseConfig } = require('../nodes/dcs-interlock/logic');

const T0 = 1_800_000_000;
const running = (over = {}) => ({ state: 'RUNNING', connected: true, bath_temp: -20.0, external_temp: null, ts: T0, ...over });

function started(cfg = {}) {
  const il = new Interlock({ startupGraceS: 0, lvOffDelayS: 5, ...cfg }, T0);
  il.onMessage('julabo/status', running(), T0);
  return il;
}
const commands = (outs) => outs.filter((o) => o.topic.startsWith('caen/cmd/')).map((o) => o.topic);
const events = (outs) => outs.filter((o) => o.topic === 'interlock/event').map((o) => o.payload);
const lastStatus = (outs) => outs.filter((o) => o.topic === 'interlock/status').map((o) => o.payload).pop();

describe('dew point (Magnus)', () => {
  it('matches reference values within 0.1 K', () => {
    assert.ok(Math.abs(dewPoint(20, 50) - 9.26) < 0.1);
    assert.ok(Math.abs(dewPoint(25, 60) - 16.69) < 0.1);
    assert.ok(Math.abs(dewPoint(0, 100) - 0) < 0.01);
    assert.ok(Math.abs(dewPoint(-10, 80) - -12.9) < 0.2);
  });
  it('refuses missing or impossible humidity', () => {
    assert.strictEqual(dewPoint(20, 0), null);
    assert.strictEqual(dewPoint(20, 101), null);
    assert.strictEqual(dewPoint(null, 50), null);
    assert.strictEqual(dewPoint(20, 'x'), null);
  });
});

describe('configuration', () => {
  it('takes empty env substitutions as defaults and parses numbers from strings', () => {
    const cfg = normaliseConfig({ bathTempMax: '', staleS: '15', lvOffDelayS: '0' });
    assert.strictEqual(cfg.bathTempMax, 25);
    assert.strictEqual(cfg.staleS, 15);
    assert.strictEqual(cfg.lvOffDelayS, 0);
  });
  it('refuses a zero stale time', () => {
    assert.throws(() => normaliseConfig({ staleS: '0' }), /staleS/);
  });
});

describe('chiller interlock', () => {
  it('keeps HV alone while the chiller runs cold', () => {
    const il = started();
    const outs = il.onMessage('julabo/status', running({ bath_temp: -19.5 }), T0 + 1);
    assert.deepStrictEqual(commands(outs), []);
    assert.strictEqual(il.state, 'OK');
  });

  it('switches HV off at once when the chiller stops, LV off after the delay', () => {
    const il = started();
    const outs = il.onMessage('julabo/status', running({ state: 'STOPPED', ts: T0 + 1 }), T0 + 1);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
    assert.strictEqual(outs[0].topic, 'caen/cmd/hv_off', 'the command is the first thing sent');
    assert.deepStrictEqual(Object.keys(outs[0].payload), ['id', 'by', 'from'], 'no extra arguments: all modules');
    assert.strictEqual(outs[0].payload.by, 'interlock'); // named in the audit trail
    const trip = events(outs).find((e) => e.kind === 'trip');
    assert.strictEqual(trip.reason, 'chiller_not_running');
    assert.strictEqual(trip.severity, 'alarm');
    assert.deepStrictEqual(commands(il.tick(T0 + 5.9)), []);
    assert.deepStrictEqual(commands(il.tick(T0 + 6.0)), ['caen/cmd/lv_off']);
    assert.deepStrictEqual(commands(il.tick(T0 + 20)), [], 'LV off is sent once');
  });

  it('trips on a chiller alarm and names the alarm text', () => {
    const il = started();
    const outs = il.onMessage('julabo/status', running({ state: 'ALARM', status_code: -1, status_text: 'LOW LEVEL ALARM' }), T0 + 1);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
    const trip = events(outs)[0];
    assert.strictEqual(trip.reason, 'chiller_alarm');
    assert.match(trip.message, /LOW LEVEL ALARM/);
  });

  it('trips when the bath is warmer than the configured limit', () => {
    const il = started({ bathTempMax: 0 });
    assert.deepStrictEqual(commands(il.onMessage('julabo/status', running({ bath_temp: -0.1 }), T0 + 1)), []);
    const outs = il.onMessage('julabo/status', running({ bath_temp: 0.2 }), T0 + 2);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
    assert.strictEqual(events(outs)[0].reason, 'bath_temp_high');
  });

  it('trips (HV then LV) when the chiller runs but its bath temperature is no longer read (null)', () => {
    const il = started();
    const outs = il.onMessage('julabo/status', running({ bath_temp: null }), T0 + 1);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
    assert.strictEqual(events(outs)[0].reason, 'bath_temp_unknown');
    assert.strictEqual(events(outs)[0].action, 'hv_off+lv_off');
  });

  it('trips when the chiller status goes stale', () => {
    const il = started({ staleS: 10 });
    assert.deepStrictEqual(commands(il.tick(T0 + 9.9)), []);
    const outs = il.tick(T0 + 10.1);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
    assert.strictEqual(events(outs)[0].reason, 'chiller_stale');
  });

  it('trips when no chiller status ever arrives', () => {
    const il = new Interlock({ staleS: 5, startupGraceS: 0 }, T0);
    assert.deepStrictEqual(commands(il.tick(T0 + 4)), []);
    assert.deepStrictEqual(commands(il.tick(T0 + 5.5)), ['caen/cmd/hv_off']);
  });

  it('treats an old retained status as stale (its ts, not the arrival time, counts)', () => {
    const il = new Interlock({ staleS: 10, startupGraceS: 0 }, T0);
    const outs = il.onMessage('julabo/status', running({ ts: T0 - 3600 }), T0, { retain: true });
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
  });

  it('trips when the chiller service goes offline (last will)', () => {
    const il = started();
    const outs = il.onMessage('julabo/availability', Buffer.from('offline'), T0 + 1);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
    assert.match(events(outs)[0].message, /offline/);
  });

  it('ignores a malformed chiller status instead of crashing', () => {
    const il = started();
    const outs = il.onMessage('julabo/status', Buffer.from('{not json'), T0 + 1);
    assert.deepStrictEqual(commands(outs), []);
    assert.strictEqual(il.counters.badInput, 1);
  });
});

describe('dew-point interlock', () => {
  it('switches HV (not LV) off when the air dew point comes within the margin of the coolant', () => {
    const il = started({ dewpointMarginK: 2 });
    // -20 °C coolant; 22 °C at 3 %RH has dew point ~ -25.3 °C: safe
    assert.deepStrictEqual(commands(il.onMessage('env/box', { temperature: 22, humidity: 3, ts: T0 + 1 }, T0 + 1)), []);
    // 22 °C at 5 %RH -> dew point ~ -19.5 °C, within 2 K of -20 °C
    const outs = il.onMessage('env/box', { temperature: 22, humidity: 5, ts: T0 + 2 }, T0 + 2);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
    assert.strictEqual(events(outs)[0].reason, 'dewpoint:box');
    assert.deepStrictEqual(commands(il.tick(T0 + 60)), [], 'no LV off for a dew-point trip');
  });

  it('uses the margin from the configuration', () => {
    const il = started({ dewpointMarginK: 10 });
    const outs = il.onMessage('env/box', { temperature: 22, humidity: 3, ts: T0 + 1 }, T0 + 1);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
  });

  it('trips when a humidity sensor that was reporting goes silent', () => {
    const il = started({ envStaleS: 30, staleS: 1000 });
    il.onMessage('env/box', { temperature: 22, humidity: 3, ts: T0 + 1 }, T0 + 1);
    il.onMessage('julabo/status', running({ ts: T0 + 30 }), T0 + 30);
    const outs = il.tick(T0 + 32);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
    assert.strictEqual(events(outs)[0].reason, 'env_stale:box');
  });
});

describe('latching and acknowledgement', () => {
  function trippedAndCleared() {
    const il = started({ lvOffDelayS: 0 });
    il.onMessage('julabo/status', running({ state: 'STOPPED', ts: T0 + 1 }), T0 + 1);
    il.tick(T0 + 1.1);
    const outs = il.onMessage('julabo/status', running({ ts: T0 + 2 }), T0 + 2);
    return { il, outs };
  }

  it('stays latched (ACK_PENDING) after the chiller runs again, and does not switch anything on', () => {
    const { il, outs } = trippedAndCleared();
    assert.strictEqual(il.state, 'ACK_PENDING');
    assert.deepStrictEqual(commands(outs), []);
    assert.deepStrictEqual(lastStatus(outs).active, ['chiller_not_running']);
    assert.deepStrictEqual(lastStatus(outs).conditions, []);
  });

  it('refuses an acknowledgement while a condition is still present', () => {
    const il = started();
    il.onMessage('julabo/status', running({ state: 'STOPPED', ts: T0 + 1 }), T0 + 1);
    const outs = il.onMessage('interlock/cmd/acknowledge', { id: 'a1', operator: 'ana' }, T0 + 2);
    const reply = outs.find((o) => o.topic === 'interlock/reply').payload;
    assert.strictEqual(reply.ok, false);
    assert.strictEqual(reply.id, 'a1');
    assert.match(reply.error, /chiller_not_running/);
    assert.strictEqual(il.state, 'TRIPPED');
  });

  it('refuses an acknowledgement while the LV-off step is pending', () => {
    const il = started({ lvOffDelayS: 30 });
    il.onMessage('julabo/status', running({ state: 'STOPPED', ts: T0 + 1 }), T0 + 1);
    il.onMessage('julabo/status', running({ ts: T0 + 2 }), T0 + 2);
    const outs = il.onMessage('interlock/cmd/acknowledge', '{}', T0 + 3);
    assert.match(outs.find((o) => o.topic === 'interlock/reply').payload.error, /LV-off/);
  });

  it('re-arms on an operator acknowledgement once conditions cleared', () => {
    const { il } = trippedAndCleared();
    const outs = il.onMessage('interlock/cmd/acknowledge', Buffer.from('{"operator":"ana"}'), T0 + 3);
    assert.strictEqual(il.state, 'OK');
    const ack = events(outs).find((e) => e.kind === 'acknowledged');
    assert.strictEqual(ack.operator, 'ana');
    assert.strictEqual(lastStatus(outs).state, 'OK');
    assert.strictEqual(outs.find((o) => o.topic === 'interlock/reply').payload.ok, true);
    // armed again: the next stop trips again (LV-off delay 0 here: both at once, HV first)
    const again = il.onMessage('julabo/status', running({ state: 'STOPPED', ts: T0 + 4 }), T0 + 4);
    assert.deepStrictEqual(commands(again), ['caen/cmd/hv_off', 'caen/cmd/lv_off']);
  });

  it('refuses a malformed acknowledgement payload', () => {
    const { il } = trippedAndCleared();
    const outs = il.onMessage('interlock/cmd/acknowledge', Buffer.from('[1,2]'), T0 + 3);
    assert.strictEqual(outs.find((o) => o.topic === 'interlock/reply').payload.ok, false);
    assert.strictEqual(il.state, 'ACK_PENDING');
  });

  it('switches HV off again if HV is found on while latched', () => {
    const { il } = trippedAndCleared();
    const outs = il.onMessage('caen/status', { state: 'HV_ON', modules_hv_on: 2, ts: T0 + 20 }, T0 + 20);
    assert.deepStrictEqual(commands(outs), ['caen/cmd/hv_off']);
    assert.deepStrictEqual(commands(il.onMessage('caen/status', { state: 'HV_ON', modules_hv_on: 2 }, T0 + 21)), [], 'rate limited');
  });

  it('restores latched reasons from its retained status after a restart', () => {
    const il = new Interlock({ startupGraceS: 0 }, T0);
    il.onMessage('interlock/status', { state: 'ACK_PENDING', active: ['bath_temp_high'], ts: T0 - 50 }, T0, { retain: true });
    il.onMessage('julabo/status', running(), T0);
    assert.strictEqual(il.state, 'ACK_PENDING');
    il.onMessage('interlock/cmd/acknowledge', {}, T0 + 1);
    assert.strictEqual(il.state, 'OK');
  });

  it('ignores its own live (non-retained) status echo', () => {
    const il = started();
    il.onMessage('interlock/status', { state: 'TRIPPED', active: ['chiller_alarm'], ts: T0 }, T0 + 1);
    assert.strictEqual(il.state, 'OK');
  });
});

describe('command table', () => {
  it('publishes its command table retained with the first status and every heartbeat, as every service does', () => {
    const il = started({ heartbeatS: 30 });
    const tables = (out) => out.filter((o) => o.topic === 'interlock/commands');
    const first = tables(il.tick(T0 + 31));
    assert.strictEqual(first.length, 1);
    assert.strictEqual(first[0].retain, true);
    const [ack] = first[0].payload.commands;
    assert.deepStrictEqual([ack.name, ack.args.map((a) => [a.name, a.type, a.required]), ack.completion],
      ['acknowledge', [['operator', 'string', false]], null]);
    assert.strictEqual(tables(il.tick(T0 + 40)).length, 0, 'not with every status change');
  });
});

describe('status publication', () => {
  it('publishes the retained status on change and as a heartbeat only', () => {
    const il = started({ heartbeatS: 30 });
    const first = il.tick(T0 + 1).filter((o) => o.topic === 'interlock/status');
    assert.strictEqual(first.length, 0, 'already published at the first evaluation');
    assert.strictEqual(il.tick(T0 + 31).filter((o) => o.topic === 'interlock/status').length, 1);
    const s = il.tick(T0 + 62).find((o) => o.topic === 'interlock/status');
    assert.strictEqual(s.retain, true);
    assert.deepStrictEqual(Object.keys(s.payload).slice(0, 2), ['state', 'active']);
  });
});

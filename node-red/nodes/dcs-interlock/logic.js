'use strict';
/**
 * trackerdcs interlock logic, free of I/O (sans-I/O).
 *
 * The Node-RED node in interlock.js feeds MQTT messages and clock ticks into an {@link Interlock} and
 * publishes what it returns. Every method takes `now` (epoch seconds) and returns a list of outputs
 * `{topic, payload, qos, retain}`; nothing here reads a clock, a timer or the network.
 *
 * Conditions (each a "reason"):
 *   chiller_stale        no chiller status for `staleS` seconds (or its service went offline)
 *   chiller_not_running  chiller state is not RUNNING (STOPPED, ERROR, DISCONNECTED, connected=false)
 *   chiller_alarm        chiller state ALARM
 *   bath_temp_high       bath temperature above `bathTempMax`
 *   bath_temp_unknown    the chiller runs but publishes no bath temperature (julabo-fsm publishes null once the
 *                        reading is older than its `stale_after_s`): temperature and dew-point checks are blind
 *   dewpoint:<sensor>    dew point of the air at env/<sensor> (Magnus) above cold temperature - margin
 *   env_stale:<sensor>   an environment sensor that was reporting went silent for `envStaleS` seconds
 * Chiller reasons switch HV off, then LV off after `lvOffDelayS`; dew-point and sensor reasons switch HV off.
 * Every reason latches; the interlock is re-armed only by an operator acknowledgement once all conditions
 * have cleared and the LV-off step (if any) has been sent.
 */

const STATES = Object.freeze({ OK: 'OK', TRIPPED: 'TRIPPED', ACK_PENDING: 'ACK_PENDING' });
const ACTION_HV = 'hv_off';
const ACTION_HV_LV = 'hv_off+lv_off';

const DEFAULTS = Object.freeze({
  root: 'interlock',
  chillerRoot: 'julabo',
  caenRoot: 'caen',
  envRoot: 'env',
  bathTempMax: 25.0, // °C
  staleS: 60.0, // s without chiller status
  lvOffDelayS: 10.0, // s between HV off and LV off
  dewpointMarginK: 2.0, // K between dew point and cold temperature
  envStaleS: 120.0, // s; 0 disables the sensor staleness reason
  heartbeatS: 30.0, // s between unchanged status republications
  startupGraceS: 2.0, // s before the first status is published (lets retained state arrive)
  hvResendS: 10.0, // s between repeated hv_off while latched and HV found on
});

// Magnus coefficients over water (Sonntag 1990), valid -45..60 °C.
const MAGNUS_A = 17.62;
const MAGNUS_B = 243.12;

/**
 * Dew point (°C) of air at temperature `t` (°C) and relative humidity `rh` (%), Magnus formula.
 * Returns null for missing or out-of-range input (rh <= 0 or > 100, non-numbers).
 */
function dewPoint(t, rh) {
  if (!isNum(t) || !isNum(rh) || rh <= 0 || rh > 100) return null;
  const gamma = Math.log(rh / 100) + (MAGNUS_A * t) / (MAGNUS_B + t);
  return (MAGNUS_B * gamma) / (MAGNUS_A - gamma);
}

/**
 * The interlock's command table, published retained on `<root>/commands` like every trackerdcs service's
 * (docs/mqtt-api.md "Command tables"): `dcs interlock --help`, shell completion and forms read it. The reply of
 * `acknowledge` is its outcome (no `completion`).
 */
function commandTable(root) {
  const operator = {
    name: 'operator', type: 'string', items: null, required: false, default: null, minimum: null, maximum: null,
    choices: null, help: 'who acknowledges (kept in the event and the audit trail)',
  };
  return {
    schema: 1,
    service: 'interlock',
    root,
    version: '',
    commands: [{
      name: 'acknowledge',
      help: 're-arm the latched interlock: refused while a condition is present or its LV-off step is pending',
      args: [operator],
      allow_extra: false,
      completion: null,
    }],
  };
}

function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

/** Parse a number from a node property (which may be an empty env substitution); fall back to `dflt`. */
function numberOr(value, dflt) {
  if (value === undefined || value === null || value === '') return dflt;
  const n = Number(value);
  return Number.isFinite(n) ? n : dflt;
}

/** Normalise a configuration object: numbers parsed, missing values defaulted, nonsense refused. */
function normaliseConfig(raw) {
  const cfg = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS)) {
    if (typeof DEFAULTS[key] === 'number') cfg[key] = numberOr(raw && raw[key], DEFAULTS[key]);
    else if (raw && typeof raw[key] === 'string' && raw[key].trim()) cfg[key] = raw[key].trim();
  }
  for (const key of ['staleS', 'heartbeatS', 'hvResendS']) {
    if (!(cfg[key] > 0)) throw new Error(`interlock: ${key} must be > 0, got ${cfg[key]}`);
  }
  for (const key of ['lvOffDelayS', 'dewpointMarginK', 'envStaleS', 'startupGraceS']) {
    if (!(cfg[key] >= 0)) throw new Error(`interlock: ${key} must be >= 0, got ${cfg[key]}`);
  }
  return cfg;
}

/** Decode an MQTT payload (Buffer, string or object) into an object; null if it is not a JSON object. */
function asObject(payload) {
  if (payload && typeof payload === 'object' && !Buffer.isBuffer(payload)) return payload;
  const text = Buffer.isBuffer(payload) ? payload.toString('utf8') : payload;
  if (typeof text !== 'string' || !text.trim()) return null;
  try {
    const obj = JSON.parse(text);
    return obj && typeof obj === 'object' && !Array.isArray(obj) ? obj : null;
  } catch (e) {
    return null;
  }
}

function fmt(v, digits = 1) {
  return isNum(v) ? v.toFixed(digits) : 'n/a';
}

class Interlock {
  /**
   * @param {object} config see DEFAULTS
   * @param {number} now epoch seconds at start
   */
  constructor(config, now) {
    this.cfg = normaliseConfig(config || {});
    this.startedAt = now;
    this.state = STATES.OK;
    this.chiller = { status: null, lastSeen: null, offline: false };
    this.caen = { hvOn: 0, state: null };
    this.env = new Map(); // sensor -> {temperature, humidity, lastSeen}
    this.latched = new Map(); // reason -> {since, message, action, present}
    this.present = new Map(); // reason -> {message, action}
    this.lvOffDueAt = null;
    this.lastHvOffAt = null;
    this.lastStatusKey = null;
    this.lastStatusAt = null;
    this.published = false;
    this.counters = { trips: 0, hvOffSent: 0, lvOffSent: 0, acks: 0, badInput: 0 };
  }

  // ------------------------------------------------------------------ inputs
  /**
   * Feed one MQTT message. `retain` tells whether it was a retained message delivered at subscription.
   * Returns outputs (commands, events, status, replies).
   */
  onMessage(topic, payload, now, { retain = false } = {}) {
    const c = this.cfg;
    const out = [];
    if (topic === `${c.chillerRoot}/status`) {
      const obj = asObject(payload);
      if (obj === null) {
        this.counters.badInput++;
        return out; // an unreadable status is not a status: staleness will catch a silent chiller
      }
      const ts = isNum(obj.ts) ? Math.min(obj.ts, now) : now;
      this.chiller.status = obj;
      this.chiller.lastSeen = ts;
      this.chiller.offline = false;
    } else if (topic === `${c.chillerRoot}/availability`) {
      const text = Buffer.isBuffer(payload) ? payload.toString('utf8') : String(payload);
      this.chiller.offline = text.trim() === 'offline';
    } else if (topic === `${c.caenRoot}/status`) {
      const obj = asObject(payload);
      if (obj === null) return out;
      this.caen.hvOn = isNum(obj.modules_hv_on) ? obj.modules_hv_on : 0;
      this.caen.state = typeof obj.state === 'string' ? obj.state : null;
    } else if (topic.startsWith(`${c.envRoot}/`) && topic.split('/').length === 2) {
      const sensor = topic.slice(c.envRoot.length + 1);
      const obj = asObject(payload);
      if (obj === null || !sensor) {
        this.counters.badInput++;
        return out;
      }
      const ts = isNum(obj.ts) ? Math.min(obj.ts, now) : now;
      this.env.set(sensor, { temperature: obj.temperature, humidity: obj.humidity, lastSeen: ts });
    } else if (topic === `${c.root}/cmd/acknowledge`) {
      return this.acknowledge(payload, now);
    } else if (topic === `${c.root}/status`) {
      if (retain) this.restore(asObject(payload), now);
      return out;
    } else {
      return out;
    }
    return this.evaluate(now);
  }

  /** Periodic evaluation: staleness, the delayed LV off, heartbeat. */
  tick(now) {
    return this.evaluate(now);
  }

  /** Re-latch the reasons a previous instance had published (retained status) so a restart never re-arms. */
  restore(doc, now) {
    if (!doc || !Array.isArray(doc.active) || doc.state === STATES.OK) return;
    for (const reason of doc.active) {
      if (typeof reason !== 'string' || this.latched.has(reason)) continue;
      this.latched.set(reason, {
        since: isNum(doc.ts) ? doc.ts : now,
        message: 'latched before a Node-RED restart',
        action: actionFor(reason),
        present: false,
      });
    }
    if (this.latched.size && this.state === STATES.OK) this.state = STATES.ACK_PENDING;
  }

  /**
   * Operator acknowledgement. Accepted only when no condition is present and no LV-off is pending.
   * Replies on `<root>/reply` like a service command.
   */
  acknowledge(payload, now) {
    const c = this.cfg;
    const args = asObject(payload) || {};
    const id = typeof args.id === 'string' || isNum(args.id) ? args.id : null;
    const operator = typeof args.operator === 'string' && args.operator ? args.operator.slice(0, 100) : null;
    const out = this.evaluate(now);
    let error = null;
    if (payload !== undefined && payload !== null && String(payload).trim() && asObject(payload) === null) {
      error = 'payload must be a JSON object';
    } else if (this.present.size) {
      error = `cannot acknowledge: conditions still present: ${[...this.present.keys()].sort().join(', ')}`;
    } else if (this.lvOffDueAt !== null) {
      error = 'cannot acknowledge: the LV-off step of the interlock is still pending';
    }
    if (error) {
      out.push(this.event('ack_refused', error, 'warning', now, { operator }));
    } else if (this.state !== STATES.OK) {
      const reasons = [...this.latched.keys()].sort();
      this.latched.clear();
      this.state = STATES.OK;
      this.counters.acks++;
      out.push(
        this.event('acknowledged', `interlock re-armed by ${operator || 'an operator'} (${reasons.join(', ')})`, 'info', now, {
          operator,
          reasons,
        }),
      );
      out.push(...this.statusOutput(now, true));
    }
    out.push({
      topic: `${c.root}/reply`,
      payload: { id, command: 'acknowledge', ok: error === null, error, result: { state: this.state }, ts: now },
      qos: 1,
      retain: false,
    });
    return out;
  }

  // ------------------------------------------------------------------ evaluation
  /** The conditions present now: Map reason -> {message, action}. */
  conditions(now) {
    const c = this.cfg;
    const found = new Map();
    const ch = this.chiller;
    const st = ch.status;
    if (ch.offline) {
      found.set('chiller_stale', { message: 'chiller service offline', action: ACTION_HV_LV });
    } else if (st === null) {
      if (now - this.startedAt > c.staleS) {
        found.set('chiller_stale', { message: `no chiller status received for ${fmt(now - this.startedAt, 0)} s`, action: ACTION_HV_LV });
      }
    } else if (now - ch.lastSeen > c.staleS) {
      found.set('chiller_stale', { message: `chiller status is ${fmt(now - ch.lastSeen, 0)} s old (limit ${c.staleS} s)`, action: ACTION_HV_LV });
    }
    if (st !== null) {
      if (st.state === 'ALARM') {
        found.set('chiller_alarm', {
          message: `chiller alarm ${st.status_code ?? ''} ${st.status_text ?? ''}`.replace(/\s+/g, ' ').trim(),
          action: ACTION_HV_LV,
        });
      } else if (st.state !== 'RUNNING' || st.connected === false) {
        found.set('chiller_not_running', { message: `chiller not running (state ${st.state ?? 'unknown'})`, action: ACTION_HV_LV });
      }
      if (st.state === 'RUNNING' && !isNum(st.bath_temp)) {
        found.set('bath_temp_unknown', {
          message: 'chiller runs but its bath temperature is not being read: temperature and dew-point checks are blind',
          action: ACTION_HV_LV,
        });
      }
      if (isNum(st.bath_temp) && st.bath_temp > c.bathTempMax) {
        found.set('bath_temp_high', { message: `bath temperature ${fmt(st.bath_temp, 2)} °C above limit ${c.bathTempMax} °C`, action: ACTION_HV_LV });
      }
    }
    const cold = this.coldTemperature();
    for (const [sensor, reading] of this.env) {
      const age = now - reading.lastSeen;
      if (c.envStaleS > 0 && age > c.envStaleS) {
        found.set(`env_stale:${sensor}`, { message: `sensor ${sensor} silent for ${fmt(age, 0)} s: no dew-point protection`, action: ACTION_HV });
        continue;
      }
      const dp = dewPoint(reading.temperature, reading.humidity);
      if (dp !== null && cold !== null && dp > cold - c.dewpointMarginK) {
        found.set(`dewpoint:${sensor}`, {
          message: `dew point ${fmt(dp)} °C at ${sensor} (${fmt(reading.temperature)} °C, ${fmt(reading.humidity)} %RH) within ${c.dewpointMarginK} K of cold temperature ${fmt(cold)} °C`,
          action: ACTION_HV,
        });
      }
    }
    return found;
  }

  /** The coldest known coolant temperature: chiller bath (and external Pt100 if present), else null. */
  coldTemperature() {
    const st = this.chiller.status;
    if (!st) return null;
    const temps = [st.bath_temp, st.external_temp].filter(isNum);
    return temps.length ? Math.min(...temps) : null;
  }

  /** Compare conditions with latched reasons, act on new ones, run the LV-off delay and publish status. */
  evaluate(now) {
    const out = [];
    this.present = this.conditions(now);
    const fresh = [...this.present.keys()].filter((r) => !this.latched.has(r));
    for (const [reason, entry] of this.latched) entry.present = this.present.has(reason);
    if (fresh.length) {
      this.state = STATES.TRIPPED;
      for (const reason of fresh.sort()) {
        const cond = this.present.get(reason);
        this.latched.set(reason, { since: now, message: cond.message, action: cond.action, present: true });
        this.counters.trips++;
        out.push(this.event('trip', `interlock ${reason}: ${cond.message} -> ${cond.action}`, 'alarm', now, { reason, action: cond.action }));
        if (cond.action === ACTION_HV_LV && this.lvOffDueAt === null) this.lvOffDueAt = now + this.cfg.lvOffDelayS;
      }
      out.unshift(this.command('hv_off', now)); // the command goes out before the events
    } else if (this.state === STATES.TRIPPED && this.present.size === 0) {
      this.state = STATES.ACK_PENDING;
      out.push(this.event('cleared', 'all interlock conditions cleared; acknowledge to re-arm', 'info', now, {}));
    } else if (this.state === STATES.ACK_PENDING && this.present.size) {
      this.state = STATES.TRIPPED;
      out.push(this.command('hv_off', now));
      out.push(this.event('trip', `interlock condition back: ${[...this.present.keys()].join(', ')}`, 'alarm', now, { reason: [...this.present.keys()][0], action: ACTION_HV }));
    }
    if (this.lvOffDueAt !== null && now >= this.lvOffDueAt) {
      this.lvOffDueAt = null;
      out.push(this.command('lv_off', now));
      out.push(this.event('action', `LV off ${this.cfg.lvOffDelayS} s after HV off`, 'warning', now, { action: 'lv_off' }));
    }
    if (this.state !== STATES.OK && this.caen.hvOn > 0 && this.caen.state !== 'RAMPING' && now - (this.lastHvOffAt ?? -Infinity) >= this.cfg.hvResendS) {
      out.push(this.command('hv_off', now));
      out.push(this.event('enforce', `${this.caen.hvOn} module(s) with HV on while the interlock is latched: HV off again`, 'warning', now, { action: ACTION_HV }));
    }
    out.push(...this.statusOutput(now, false));
    return out;
  }

  // ------------------------------------------------------------------ outputs
  /** The retained status document. */
  statusDocument(now) {
    const details = [...this.latched.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([reason, e]) => ({ reason, message: e.message, action: e.action, since: e.since, present: e.present }));
    return {
      state: this.state,
      active: details.map((d) => d.reason),
      conditions: [...this.present.keys()].sort(),
      details,
      lv_off_pending: this.lvOffDueAt !== null,
      ts: now,
    };
  }

  statusOutput(now, force) {
    if (now - this.startedAt < this.cfg.startupGraceS && !force && this.state === STATES.OK) return [];
    const doc = this.statusDocument(now);
    const key = JSON.stringify({ ...doc, ts: 0, details: doc.details.map((d) => [d.reason, d.present]) });
    const due = this.lastStatusAt === null || now - this.lastStatusAt >= this.cfg.heartbeatS;
    if (!force && key === this.lastStatusKey && !due) return [];
    this.lastStatusKey = key;
    this.lastStatusAt = now;
    this.published = true;
    const out = [{ topic: `${this.cfg.root}/status`, payload: doc, qos: 1, retain: true }];
    // the command table with the first status and every heartbeat (retained: a reconnecting broker gets it back)
    if (due) out.push({ topic: `${this.cfg.root}/commands`, payload: commandTable(this.cfg.root), qos: 1, retain: true });
    return out;
  }

  command(name, now) {
    if (name === 'hv_off') {
      this.lastHvOffAt = now;
      this.counters.hvOffSent++;
    } else {
      this.counters.lvOffSent++;
    }
    // All modules: an empty argument object. The id makes the reply traceable to the interlock; `by` names it in
    // the audit trail (docs/security.md).
    return {
      topic: `${this.cfg.caenRoot}/cmd/${name}`,
      payload: { id: `interlock-${name}-${Math.round(now * 1000)}`, by: 'interlock', from: 'node-red interlock' },
      qos: 1,
      retain: false,
    };
  }

  event(kind, message, severity, now, data) {
    return {
      topic: `${this.cfg.root}/event`,
      payload: { kind, severity, message, service: 'interlock', ...data, state: this.state, ts: now },
      qos: 1,
      retain: false,
    };
  }
}

function actionFor(reason) {
  return reason.startsWith('dewpoint:') || reason.startsWith('env_stale:') ? ACTION_HV : ACTION_HV_LV;
}

module.exports = {
  Interlock, STATES, DEFAULTS, dewPoint, normaliseConfig, asObject, commandTable, ACTION_HV, ACTION_HV_LV,
};

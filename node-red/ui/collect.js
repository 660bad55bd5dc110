// Function node "collect model": folds every MQTT message the operator UI subscribes to into one model
// (flow context "model") and sends it to the dashboard widgets at most every 200 ms.
// Output 1 (stand page): the model without the burn-in steps and IV curves. Outputs 2-5 (burn-in page), each
// only when its part changed, so that the large steps and IV documents do not travel with every status tick:
//   2 status widget {status: {burnin}}, 3 events widget {burnin: {events}}, 4 IV widget {burnin: {iv}},
//   5 steps widget {status: {burnin}, burnin: {steps}} (again when the current step changes).
// Topics: <svc>/availability, <svc>/status, caen/status/module/<m>, <svc>/event, <svc>/reply, <svc>/health, env/<sensor>,
// burnin/status/steps and burnin/status/iv/<module> (the burn-in page; burn-in events are also kept apart),
// audit/recent (the last records of the audit trail, trackerdcs/audit.py).
const MAX_EVENTS = 40;
const MAX_BURNIN_EVENTS = 30;
const MAX_REPLIES = 10;
const model = flow.get('model') || {
    services: {}, status: {}, modules: {}, env: {}, events: [], replies: [], updated: null,
};
if (!model.burnin) model.burnin = { steps: null, iv: {}, events: [] };
const topic = typeof msg.topic === 'string' ? msg.topic : '';
const parts = topic.split('/');
const root = parts[0];
let p = msg.payload;
if (Buffer.isBuffer(p)) p = p.toString('utf8');
if (typeof p === 'string' && /^\s*[{[]/.test(p)) {
    try { p = JSON.parse(p); } catch (e) { node.warn(`unreadable JSON on ${topic}`); return null; }
}
const empty = p === '' || p === null || p === undefined;
function dirty(part) { context.set('dirty', { ...(context.get('dirty') || {}), [part]: true }); }
function service(name) {
    if (!model.services[name]) model.services[name] = { name, availability: null, state: null, ts: null, health: null };
    return model.services[name];
}
function dewPoint(t, rh) {
    if (typeof t !== 'number' || typeof rh !== 'number' || rh <= 0 || rh > 100) return null;
    const g = Math.log(rh / 100) + (17.62 * t) / (243.12 + t);
    return (243.12 * g) / (17.62 - g);
}
if (root === 'env' && parts.length === 2 && parts[1]) {
    if (empty) delete model.env[parts[1]];
    else if (typeof p === 'object') model.env[parts[1]] = { ...p, dewpoint: dewPoint(p.temperature, p.humidity) };
} else if (parts[1] === 'availability' && parts.length === 2) {
    service(root).availability = empty ? null : String(p);
} else if (parts[1] === 'status' && parts.length === 2 && typeof p === 'object' && !empty) {
    const s = service(root);
    s.state = p.state ?? null;
    s.ts = p.ts ?? null;
    model.status[root] = p;
    if (root === 'burnin') {
        dirty('status');
        const at = `${p.uid}/${p.step}/${p.state}`;
        if (context.get('burninAt') !== at) { context.set('burninAt', at); dirty('steps'); }
    }
} else if (parts[1] === 'status' && parts[2] === 'module' && parts.length === 4) {
    if (empty) delete model.modules[parts[3]];
    else if (typeof p === 'object') model.modules[parts[3]] = p;
} else if (topic === 'burnin/status/steps') {
    dirty('steps');
    model.burnin.steps = !empty && typeof p === 'object' && Array.isArray(p.steps) ? p : null;
} else if (root === 'burnin' && parts[1] === 'status' && parts[2] === 'iv' && parts.length === 4 && parts[3]) {
    if (empty) delete model.burnin.iv[parts[3]];
    else if (typeof p === 'object' && Array.isArray(p.points)) model.burnin.iv[parts[3]] = p;
    else { node.warn(`IV curve without points on ${topic}`); return null; }
    dirty('iv');
} else if (parts[1] === 'event' && parts.length === 2 && typeof p === 'object' && !empty) {
    const ev = { service: root, kind: p.kind, severity: p.severity || 'info', message: p.message || '', ts: p.ts || Date.now() / 1000 };
    model.events.unshift(ev);
    model.events.length = Math.min(model.events.length, MAX_EVENTS);
    if (root === 'burnin') {
        dirty('events');
        model.burnin.events.unshift(ev);
        model.burnin.events.length = Math.min(model.burnin.events.length, MAX_BURNIN_EVENTS);
    }
} else if (parts[1] === 'reply' && parts.length === 2 && typeof p === 'object' && !empty) {
    model.replies.unshift({ service: root, command: p.command, ok: p.ok, error: p.error, id: p.id, ts: p.ts });
    model.replies.length = Math.min(model.replies.length, MAX_REPLIES);
} else if (topic === 'audit/recent') {
    model.audit = !empty && typeof p === 'object' && Array.isArray(p.records) ? p.records.slice(0, 20) : [];
} else if (parts[1] === 'health' && parts.length === 2 && typeof p === 'object' && !empty) {
    service(root).health = {
        version: p.version, host: p.host, uptime_s: p.uptime_s, cpu_percent: p.cpu_percent, rss_mb: p.rss_mb,
        mqtt_reconnects: p.mqtt_reconnects, commands_queued: p.commands_queued, mqtt_out_queued: p.mqtt_out_queued,
        msgs_in_per_s: p.msgs_in_per_s, msgs_out_per_s: p.msgs_out_per_s, last_error: p.last_error,
        last_error_ts: p.last_error_ts, link_error: p.link_error, ts: p.ts,
    };
} else {
    return null;
}
model.updated = Date.now() / 1000;
flow.set('model', model);
if (!context.get('pending')) {
    context.set('pending', true);
    setTimeout(() => {
        context.set('pending', false);
        const m = flow.get('model');
        const { burnin, ...stand } = m;
        const d = context.get('dirty') || {};
        context.set('dirty', {});
        const part = (name, payload) => (d[name] ? { topic: `burnin/${name}`, payload } : null);
        const status = { burnin: m.status.burnin };
        node.send([
            { topic: 'model', payload: stand },
            part('status', { status }),
            part('events', { burnin: { events: burnin.events } }),
            part('iv', { burnin: { iv: burnin.iv } }),
            part('steps', { status, burnin: { steps: burnin.steps } }),
        ]);
    }, 200);
}
return null;

// Function node "command guard": the only way from the operator UI to the services. Accepts
// {topic: "<svc>/cmd/<name>", payload: {...}} from the widgets, refuses anything not on the list below, anything
// the logged-in person's role may not send (ROLES, from mosquitto/roles.json, put in front of this code by
// tools/build-flows.js) and switching LV/HV on while the interlock is latched; adds an id and who sent it (`by`:
// the login, `from`: "ui <browser address>"), and hands it to the MQTT output (QoS 1).
// The login comes from msg._client.user, which node-red/auth/uiauth.js sets on the server for every widget
// action (replacing whatever the browser sent), so a browser cannot act in someone else's name.
// Output 1: MQTT command. Output 2: refusals (for the log/notification).
const ALLOWED = {
    caen: ['lv_on', 'lv_off', 'hv_on', 'hv_off', 'set', 'clear_alarms', 'refresh', 'reconnect'],
    julabo: ['start', 'stop', 'set_setpoint', 'select_setpoint', 'control_sensor', 'pump_stage', 'refresh', 'reconnect'],
    ph2acf: ['start', 'abort', 'status'],
    interlock: ['acknowledge'],
    burnin: ['pause', 'resume', 'abort', 'skip', 'ack'],
};
const model = flow.get('model') || { events: [] };
function refuse(why) {
    node.warn(`UI command refused: ${why}`);
    model.events = model.events || [];
    model.events.unshift({ service: 'ui', kind: 'refused', severity: 'warning', message: why, ts: Date.now() / 1000 });
    flow.set('model', model);
    return [null, { topic: 'refused', payload: why }];
}
const m = /^([a-z0-9_-]+)\/cmd\/([a-z_]+)$/.exec(typeof msg.topic === 'string' ? msg.topic : '');
if (!m || !(ALLOWED[m[1]] || []).includes(m[2])) return refuse(`unknown command topic ${String(msg.topic).slice(0, 80)}`);
const client = msg._client || {};
const user = client.user;
if (!user || typeof user.name !== 'string' || !Object.prototype.hasOwnProperty.call(ROLES, user.role)) {
    return refuse(`${msg.topic}: no logged-in user on this message`);
}
const grants = ROLES[user.role];
if (grants !== '*' && !((grants || {})[m[1]] || []).includes(m[2])) {
    return refuse(`${user.name} (${user.role}) may not send ${msg.topic}`);
}
const payload = msg.payload === undefined || msg.payload === null ? {} : msg.payload;
if (typeof payload !== 'object' || Array.isArray(payload)) return refuse(`${msg.topic}: payload must be an object`);
const interlock = (model.status || {}).interlock;
if (m[1] === 'caen' && (m[2] === 'hv_on' || m[2] === 'lv_on') && (!interlock || interlock.state !== 'OK')) {
    return refuse(`${m[2]} refused: interlock is ${interlock ? interlock.state : 'unknown'}`);
}
const n = (context.get('n') || 0) + 1;
context.set('n', n);
const stamped = { ...payload, id: `ui-${Date.now()}-${n}`, by: user.name, from: `ui ${client.socketIp || '?'}` };
// the person, not a typed name: the interlock's acknowledgement and the burn-in's journal record the login
if ((m[1] === 'interlock' && m[2] === 'acknowledge') || m[1] === 'burnin') stamped.operator = user.name;
return [{ topic: msg.topic, payload: stamped, qos: 1, retain: false }, null];

#!/usr/bin/env node
'use strict';
/**
 * Generates ../flows.json from the sources in ../ui (function code, Vue widgets) and the tables below.
 * Node ids are fixed, so the output is deterministic: `node tools/build-flows.js --check` fails if
 * flows.json is not what this script produces (the test suite runs it).
 *
 * Broker address, MQTT credentials and interlock limits are `${ENV}` references resolved by Node-RED
 * at start (defaults in settings.js); no secret is written here.
 */
const fs = require('fs');
const path = require('path');

const here = path.resolve(__dirname, '..');
const ui = (name) => fs.readFileSync(path.join(here, 'ui', name), 'utf8');
// Who may send which command (also the source of the Mosquitto ACL: trackerdcs_ops/acl.py)
const ROLES = JSON.parse(fs.readFileSync(path.join(here, '..', 'mosquitto', 'roles.json'), 'utf8')).roles;
const withRoles = (code) => `const ROLES = ${JSON.stringify(ROLES)};\n${code}`;

const BROKER = 'dcs-broker';
const nodes = [];
const add = (n) => { nodes.push(n); return n; };

// ---------------------------------------------------------------- tabs
add({ id: 'tab-interlock', type: 'tab', label: 'Interlocks', disabled: false,
  info: 'Hardware-safety interlocks: chiller and dew point -> CAEN HV off (then LV off). See docs/services/gateway.md.' });
add({ id: 'tab-ui', type: 'tab', label: 'Operator UI', disabled: false,
  info: 'Dashboard 2.0 operator UI at /dashboard: the stand page (services, modules, chiller, runs, environment, ' +
    'interlock) and the burn-in page (progress, controls, events, IV curves, steps).' });

// ---------------------------------------------------------------- MQTT broker (credentials: ${MQTT_USER}/${MQTT_PASSWORD})
add({
  id: BROKER, type: 'mqtt-broker', name: 'trackerdcs broker',
  broker: '${MQTT_HOST}', port: '${MQTT_PORT}', clientid: '${MQTT_CLIENT_ID}',
  autoConnect: true, usetls: false, protocolVersion: '5', keepalive: '15', cleansession: true, autoUnsubscribe: true,
  birthTopic: 'interlock/availability', birthQos: '1', birthRetain: 'true', birthPayload: 'online', birthMsg: {},
  closeTopic: 'interlock/availability', closeQos: '1', closeRetain: 'true', closePayload: 'offline', closeMsg: {},
  willTopic: 'interlock/availability', willQos: '1', willRetain: 'true', willPayload: 'offline', willMsg: {},
  userProps: '', sessionExpiry: '',
});

function mqttIn(id, z, topic, x, y, wires) {
  return add({ id, type: 'mqtt in', z, name: '', topic, qos: '1', datatype: 'auto-detect', broker: BROKER,
    nl: false, rap: false, rh: 0, inputs: 0, x, y, wires: [wires] });
}
function mqttOut(id, z, name, x, y) {
  return add({ id, type: 'mqtt out', z, name, topic: '', qos: '', retain: '', respTopic: '', contentType: '',
    userProps: '', correl: '', expiry: '', broker: BROKER, x, y, wires: [] });
}

// ---------------------------------------------------------------- interlocks
const INTERLOCK_TOPICS = ['julabo/status', 'julabo/availability', 'caen/status', 'env/+', 'interlock/status',
  'interlock/cmd/acknowledge'];
INTERLOCK_TOPICS.forEach((topic, i) => mqttIn(`il-in-${i}`, 'tab-interlock', topic, 160, 60 + 50 * i, ['il-node']));
add({
  id: 'il-node', type: 'dcs-interlock', z: 'tab-interlock', name: 'chiller + dew-point interlock',
  root: 'interlock', chillerRoot: 'julabo', caenRoot: 'caen', envRoot: 'env',
  bathTempMax: '${INTERLOCK_BATH_TEMP_MAX}', staleS: '${INTERLOCK_STALE_S}', lvOffDelayS: '${INTERLOCK_LV_OFF_DELAY_S}',
  dewpointMarginK: '${INTERLOCK_DEWPOINT_MARGIN_K}', envStaleS: '${INTERLOCK_ENV_STALE_S}',
  heartbeatS: '30', startupGraceS: '2', hvResendS: '10', tickMs: '100',
  x: 470, y: 180, wires: [['il-out']],
});
mqttOut('il-out', 'tab-interlock', 'commands, events, status', 760, 180);

// ---------------------------------------------------------------- operator UI
add({ id: 'dcs-ui-base', type: 'ui-base', name: 'trackerdcs', path: '/dashboard', appIcon: '', includeClientData: true,
  acceptsClientConfig: ['ui-notification', 'ui-control'], showPathInSidebar: false, headerContent: 'page',
  navigationStyle: 'default', titleBarStyle: 'default', showReconnectNotification: true, notificationDisplayTime: 1,
  showDisconnectNotification: true, allowInstall: false });
add({ id: 'dcs-ui-theme', type: 'ui-theme', name: 'trackerdcs',
  colors: { surface: '#1f3a5f', primary: '#0d74ce', bgPage: '#eef1f5', groupBg: '#ffffff', groupOutline: '#cbd5e1' },
  sizes: { density: 'compact', pagePadding: '8px', groupGap: '8px', groupBorderRadius: '4px', widgetGap: '6px' } });
add({ id: 'dcs-ui-page', type: 'ui-page', name: 'Test stand', ui: 'dcs-ui-base', path: '/stand', icon: 'home', layout: 'grid',
  theme: 'dcs-ui-theme', breakpoints: [{ name: 'Default', px: '0', cols: '3' }, { name: 'Tablet', px: '576', cols: '6' },
    { name: 'Small Desktop', px: '768', cols: '9' }, { name: 'Desktop', px: '1024', cols: '12' }],
  order: 1, className: '', visible: 'true', disabled: 'false' });
add({ id: 'dcs-ui-page-burnin', type: 'ui-page', name: 'Burn-in', ui: 'dcs-ui-base', path: '/burnin', icon: 'fire',
  layout: 'grid', theme: 'dcs-ui-theme', breakpoints: [{ name: 'Default', px: '0', cols: '3' },
    { name: 'Tablet', px: '576', cols: '6' }, { name: 'Small Desktop', px: '768', cols: '9' },
    { name: 'Desktop', px: '1024', cols: '12' }],
  order: 2, className: '', visible: 'true', disabled: 'false' });

const PAGES = { stand: 'dcs-ui-page', burnin: 'dcs-ui-page-burnin' };
const WIDGETS = [
  // id, group name, group width, file, page
  ['services', 'Services', 12, 'services.vue', 'stand'],
  ['interlock', 'Interlock and alarms', 12, 'interlock.vue', 'stand'],
  ['audit', 'Audit trail: who did what', 12, 'audit.vue', 'stand'],
  ['modules', 'CAEN modules', 7, 'modules.vue', 'stand'],
  ['chiller', 'Chiller', 5, 'chiller.vue', 'stand'],
  ['runs', 'Calibration runs', 7, 'runs.vue', 'stand'],
  ['environment', 'Environment', 5, 'environment.vue', 'stand'],
  ['burnin', 'Burn-in', 6, 'burnin.vue', 'burnin'],
  ['burnin-events', 'Burn-in events', 6, 'burnin-events.vue', 'burnin'],
  ['burnin-iv', 'IV curves', 7, 'burnin-iv.vue', 'burnin'],
  ['burnin-steps', 'Steps', 5, 'burnin-steps.vue', 'burnin'],
];
WIDGETS.forEach(([key, title, width, , page]) => add({ id: `ui-group-${key}`, type: 'ui-group', name: title,
  page: PAGES[page], width: String(width), height: '1',
  order: WIDGETS.filter((w) => w[4] === page).findIndex((w) => w[0] === key) + 1, showTitle: true, className: '',
  visible: 'true', disabled: 'false', groupType: 'default' }));

const UI_TOPICS = ['+/status', '+/status/module/+', '+/availability', '+/event', '+/reply', '+/health', 'env/+',
  'burnin/status/steps', 'burnin/status/iv/+', 'audit/recent'];
UI_TOPICS.forEach((topic, i) => mqttIn(`ui-in-${i}`, 'tab-ui', topic, 140, 60 + 50 * i, ['ui-collect']));
// collect.js: output 1 feeds every stand widget, outputs 2-5 one burn-in widget each (the order below)
const BURNIN_OUTPUTS = ['burnin', 'burnin-events', 'burnin-iv', 'burnin-steps'];
add({ id: 'ui-collect', type: 'function', z: 'tab-ui', name: 'collect model', func: ui('collect.js'), outputs: 5,
  timeout: 0, noerr: 0, initialize: '', finalize: '', libs: [], x: 380, y: 200,
  wires: [WIDGETS.filter((w) => w[4] === 'stand').map(([key]) => `ui-w-${key}`),
    ...BURNIN_OUTPUTS.map((key) => [`ui-w-${key}`])] });
WIDGETS.forEach(([key, , , file], i) => add({ id: `ui-w-${key}`, type: 'ui-template', z: 'tab-ui',
  group: `ui-group-${key}`, page: '', ui: '', name: key, order: 1, width: '0', height: '0', head: '',
  format: ui(file), storeOutMessages: true, passthru: false, resendOnRefresh: true, templateScope: 'local',
  className: '', x: 620, y: 60 + 60 * i, wires: [['ui-guard']] }));
add({ id: 'ui-guard', type: 'function', z: 'tab-ui', name: 'command guard', func: withRoles(ui('command.js')), outputs: 2,
  timeout: 0, noerr: 0, initialize: '', finalize: '', libs: [], x: 860, y: 200, wires: [['ui-cmd-out'], ['ui-refused']] });
mqttOut('ui-cmd-out', 'tab-ui', 'service commands', 1080, 180);
add({ id: 'ui-refused', type: 'debug', z: 'tab-ui', name: 'refused UI commands', active: true, tosidebar: true,
  console: true, tostatus: true, complete: 'payload', targetType: 'msg', statusVal: 'payload', statusType: 'auto',
  x: 1090, y: 240, wires: [] });

const text = JSON.stringify(nodes, null, 2) + '\n';
const target = path.join(here, 'flows.json');
if (process.argv.includes('--check')) {
  const current = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
  if (current !== text) {
    console.error('flows.json is out of date: run node tools/build-flows.js');
    process.exit(1);
  }
  console.log('flows.json is up to date');
} else {
  fs.writeFileSync(target, text);
  console.log(`wrote ${target} (${nodes.length} nodes)`);
}

'use strict';
/**
 * Node-RED node `dcs-interlock`: a thin adapter around logic.js.
 *
 * Input: MQTT messages (msg.topic, msg.payload, msg.retain) from julabo/status, julabo/availability,
 * caen/status, env/+, interlock/status (retained, for restore) and interlock/cmd/acknowledge.
 * Output 1: messages for an `mqtt out` node (msg.topic, msg.payload object, msg.qos, msg.retain):
 * CAEN commands, interlock events, the retained interlock status and acknowledgement replies.
 * A clock tick every `tickMs` evaluates staleness and the delayed LV off.
 */
const { Interlock } = require('./logic');

module.exports = function register(RED) {
  function DcsInterlockNode(config) {
    RED.nodes.createNode(this, config);
    const node = this;
    const now = () => Date.now() / 1000;
    const cfg = {};
    for (const key of ['root', 'chillerRoot', 'caenRoot', 'envRoot', 'bathTempMax', 'staleS', 'lvOffDelayS',
      'dewpointMarginK', 'envStaleS', 'heartbeatS', 'startupGraceS', 'hvResendS']) {
      if (config[key] !== undefined) cfg[key] = config[key];
    }
    let interlock;
    try {
      interlock = new Interlock(cfg, now());
    } catch (err) {
      node.error(err.message);
      node.status({ fill: 'red', shape: 'ring', text: 'bad configuration' });
      return;
    }
    node.interlock = interlock; // for tests and the admin view
    let lastShown = null;

    function emit(outputs) {
      for (const o of outputs) {
        const out = { topic: o.topic, payload: o.payload, qos: o.qos, retain: o.retain };
        if (o.correlationData !== undefined) out.correlationData = o.correlationData;
        node.send(out);
        if (o.topic.endsWith('/event')) {
          const log = o.payload.severity === 'alarm' ? node.warn : node.log;
          log.call(node, `${o.payload.kind}: ${o.payload.message}`);
        }
      }
      if (interlock.state !== lastShown) {
        lastShown = interlock.state;
        const fill = { OK: 'green', TRIPPED: 'red', ACK_PENDING: 'yellow' }[interlock.state];
        node.status({ fill, shape: 'dot', text: interlock.state });
      }
    }

    node.on('input', (msg, send, done) => {
      try {
        if (typeof msg.topic !== 'string') {
          node.warn('dcs-interlock: message without a topic ignored');
        } else {
          const outputs = interlock.onMessage(msg.topic, msg.payload, now(), { retain: msg.retain === true });
          // MQTT v5 requests (trackerdcs DcsClient) also get the reply on their Response Topic.
          // (Needs `topic write dcs/reply/#` for user nodered in mosquitto/acl.)
          const reply = outputs.find((o) => o.topic.endsWith('/reply'));
          if (reply && typeof msg.responseTopic === 'string' && msg.responseTopic) {
            outputs.push({ ...reply, topic: msg.responseTopic, correlationData: msg.correlationData });
          }
          emit(outputs);
        }
        done();
      } catch (err) {
        done(err); // the node keeps running: the next tick evaluates again
      }
    });

    const tickMs = Math.max(20, Number(config.tickMs) || 100);
    const timer = setInterval(() => {
      try {
        emit(interlock.tick(now()));
      } catch (err) {
        node.error(`dcs-interlock tick failed: ${err.message}`);
      }
    }, tickMs);
    emit(interlock.tick(now()));
    node.on('close', () => clearInterval(timer));
  }
  RED.nodes.registerType('dcs-interlock', DcsInterlockNode);
};

'use strict';
/**
 * Drives one page of a headless Chromium started with --remote-debugging-port over the DevTools protocol, for
 * tests that press buttons of the operator UI (tests/burnin/test_ui_page.py).
 *
 *   node test/page-driver.js <debugging port> <url> '<steps as JSON>'
 *
 * Steps, in order: {"wait": "<JS expression>", "timeout": s} polls until the expression is truthy (fails after
 * the timeout, 15 s by default); {"eval": "<JS expression>"} evaluates it and keeps the value. Prints the kept
 * values as one JSON array on stdout; exit 1 with the reason on stderr when a step fails.
 */
const WebSocket = require('ws');

const [port, url, stepsText] = process.argv.slice(2);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const steps = JSON.parse(stepsText);
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const page = targets.find((t) => t.type === 'page');
  if (!page) throw new Error('no page target in Chromium');
  const ws = new WebSocket(page.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const pending = new Map();
  let next = 0;
  ws.on('message', (data) => {
    const m = JSON.parse(data);
    if (m.id && pending.has(m.id)) { pending.get(m.id)(m); pending.delete(m.id); }
  });
  const call = (method, params = {}) => new Promise((resolve) => {
    next += 1;
    pending.set(next, resolve);
    ws.send(JSON.stringify({ id: next, method, params }));
  });
  const evaluate = async (expression) => {
    const r = await call('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
    if (r.error) throw new Error(`${expression}: ${r.error.message}`);
    if (r.result.exceptionDetails) throw new Error(`${expression}: ${r.result.exceptionDetails.exception?.description || 'exception'}`);
    return r.result.result.value;
  };
  await call('Page.enable');
  await call('Page.navigate', { url });
  const kept = [];
  for (const step of steps) {
    if (step.wait !== undefined) {
      const deadline = Date.now() + 1000 * (step.timeout || 15);
      let ok = false;
      while (!ok) {
        try { ok = Boolean(await evaluate(step.wait)); } catch (e) { ok = false; }
        if (!ok) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for: ${step.wait}`);
          await sleep(100);
        }
      }
    } else {
      kept.push(await evaluate(step.eval));
    }
  }
  ws.close();
  return kept;
}

main().then(
  (kept) => { process.stdout.write(JSON.stringify(kept) + '\n'); process.exit(0); },
  (err) => { process.stderr.write(`page-driver: ${err.message}\n`); process.exit(1); },
);

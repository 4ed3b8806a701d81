// farewell: notifies a webhook when the session ends.
//
// The session's custom data is the webhook URL. In `terminating` a scenario
// may make exactly one outbound HTTP request and set no timers: the first
// POST goes out, while a timer and a second POST show what refusals look
// like (a refusal record, and a failed `fetch`). `POST /stop` on the access
// URL ends the session.
//
// `terminating` is an async function: componentize-js runs the event loop
// until its promise settles before the export returns to the host, so
// `await fetch(...)` works in any event handler.
import { id, terminate } from 'sessionbox:scenario/session@0.2.0';
import { setTimeout as setTimer } from 'sessionbox:scenario/timers@0.2.0';
import { fetchErrorText, log, refusalText, scenario } from './sessionbox.js';
export { mediaEvents } from './sessionbox.js';

let webhook = '';

async function post(body) {
  const response = await fetch(webhook, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  // Read the whole answer, as the other SDKs do.
  await response.arrayBuffer();
  return response;
}

export const appEvents = scenario({
  started(event) {
    log(`started, webhook=${event.customData}`);
    webhook = event.customData;
  },

  httpRequest(request) {
    if (request.path.split('?')[0] !== '/stop') {
      return { status: 404, headers: [], body: new Uint8Array() };
    }
    try {
      terminate();
    } catch (error) {
      log(`refused: ${refusalText(error)}`);
    }
    return { status: 200, headers: [], body: new Uint8Array() };
  },

  async terminating() {
    // Timers ended with the running phase.
    try {
      setTimer(1000);
    } catch (error) {
      log(`timer refused: ${refusalText(error)}`);
    }
    // Bytes rather than a string: a string body is streamed, and StarlingMonkey
    // (the engine of componentize-js 0.23) then aborts on a later failed request.
    const body = new TextEncoder().encode(JSON.stringify({ session: id(), event: 'terminating' }));
    try {
      const answer = await post(body);
      log(`webhook answered ${answer.status}`);
    } catch (error) {
      log(`webhook failed: ${fetchErrorText(error)}`);
    }
    // One request is all `terminating` allows: this one is refused.
    try {
      const answer = await post(body);
      log(`second request answered ${answer.status}`);
    } catch (error) {
      log(`second request refused: ${fetchErrorText(error)}`);
    }
  },

  terminated() {
    log('terminated');
  },
});

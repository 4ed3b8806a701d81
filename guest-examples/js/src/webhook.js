// webhook: tells a web service that the session ended.
//
// In `terminating` it POSTs `{"session":"<id>","custom_data":"<custom data>"}`
// to the URL in the app's variable `webhook_url`, authorized by the secret
// `webhook_token`. Both come from the server's configuration, so the same
// scenario serves apps with different endpoints, and the token is in no
// source file. `terminating` allows exactly one outbound request: this one.
//
// The token must not reach the log: only the URL and the status are logged.
// (Were it written there, the host would show `[secret]` in its place.)
import { customData, id } from 'sessionbox:scenario/session@0.2.0';
import { fetchErrorText, log, refusalText, scenario, variable } from './sessionbox.js';
export { mediaEvents } from './sessionbox.js';

export const appEvents = scenario({
  async terminating() {
    let url;
    let token;
    try {
      url = variable('webhook_url');
      token = variable('webhook_token');
    } catch (error) {
      // E.g. an app without the variable: `variables refused in terminating: ...`.
      log(refusalText(error));
      return;
    }
    // Bytes rather than a string: see farewell.js.
    const body = new TextEncoder().encode(JSON.stringify({ session: id(), custom_data: customData() }));
    try {
      const answer = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body,
      });
      // Read the whole answer, as the other SDKs do.
      await answer.arrayBuffer();
      log(`notified ${url}: ${answer.status}`);
    } catch (error) {
      log(`webhook failed: ${fetchErrorText(error)}`);
    }
  },
});

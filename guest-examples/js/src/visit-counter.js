// visit-counter: counts the requests to every session of the app.
//
// Each request to a session's access URL adds 1 to the app's key `visits`
// and answers the new count, `{"visits":N}`. The key is in the app's
// storage, not in this session, so every session of the app counts on the
// same number, and it outlives them; increments from concurrent sessions
// all count. A refusal (e.g. the host's storage is unavailable) answers 503
// with its text.
import { increment, refusalText, response, scenario } from './sessionbox.js';
export { mediaEvents } from './sessionbox.js';

export const appEvents = scenario({
  httpRequest() {
    try {
      // A BigInt (WIT's s64); JSON.stringify takes numbers.
      const visits = Number(increment('visits'));
      return response(200, JSON.stringify({ visits }), 'application/json');
    } catch (error) {
      return response(503, refusalText(error), 'text/plain');
    }
  },
});

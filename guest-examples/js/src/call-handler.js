// call-handler: answers an incoming call, plays a prompt, hangs up.
//
// Call actions are signalling-level: each returns at once, and its outcome
// arrives later as a call event naming the call's id. So the scenario keeps
// its calls by id and moves each one on from the event handlers:
// alerting -> answer -> connected -> say -> playback finished -> hang up ->
// disconnected. With nothing left to do, the session idles into `terminating`.
import { check, log, scenario } from './sessionbox.js';
export { mediaEvents } from './sessionbox.js';

const calls = new Map();

export const appEvents = scenario({
  callAlerting(event) {
    log(`answering call from ${event.callerId}`);
    // Refusals are ordinary values: `check` logs them and carries on.
    check(() => event.call.answer());
    calls.set(event.call.id(), event.call);
  },

  callConnected(id) {
    log('connected');
    const call = calls.get(id);
    if (call) check(() => call.say('Thanks for calling Sessionbox. Goodbye.', 'en-US'));
  },

  callPlaybackFinished(id) {
    log('prompt finished, hanging up');
    const call = calls.get(id);
    if (call) check(() => call.hangup());
  },

  callDisconnected(id) {
    log('call ended');
    calls.delete(id);
  },

  callFailed(id, _code, _reason) {
    // Never connected (e.g. the caller gave up): nothing left to do.
    calls.delete(id);
  },

  terminating() {
    log('terminating');
  },

  terminated() {
    log('terminated');
  },
});

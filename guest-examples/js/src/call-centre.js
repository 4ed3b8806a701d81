// call-centre: the everyday flow. It answers a caller, speaks a menu, takes
// a digit, dials an agent and connects the two.
//
// Key 1 dials `sales` and key 2 dials `support`, through the node's SIP
// trunk (in `sessionbox run`, calls are answered in process). Any other key
// repeats the menu. When the agent answers, caller and agent are connected,
// and the conversation is recorded in stereo (the caller left, the agent
// right). If the agent cannot be reached, the caller hears an apology and
// the call ends. When either side hangs up, so does the other, and the
// session ends once the recording is kept.
import { dial as dialNumber } from 'sessionbox:scenario/calls@0.2.0';
import { connect, startRecording } from 'sessionbox:scenario/media@0.3.0';
import { terminate } from 'sessionbox:scenario/session@0.2.0';
import { check, log, refusalOf, refusalText, scenario } from './sessionbox.js';
export { mediaEvents } from './sessionbox.js';

const MENU = 'Press 1 for sales, or 2 for support.';
const SORRY = 'Sorry, nobody can take your call now. Goodbye.';

let caller;
let agent;
// The apology is playing: the call ends when it finishes.
let ending = false;
// The conversation's recording, while it runs.
let recording;

const is = (call, id) => call !== undefined && call.id() === id;

function sayToCaller(text) {
  if (caller) check(() => caller.say(text));
}

function apologise() {
  ending = true;
  sayToCaller(SORRY);
}

function dial(team) {
  sayToCaller(`Connecting you to ${team}.`);
  try {
    // No caller id or display name: the trunk's user calls.
    agent = dialNumber(team, { headers: [] });
    log(`dialing ${team}`);
  } catch (error) {
    if (!refusalOf(error)) throw error;
    log(`refused: ${refusalText(error)}`);
    apologise();
  }
}

export const appEvents = scenario({
  callAlerting(event) {
    if (caller) {
      // One caller per session.
      check(() => event.call.reject(486));
      return;
    }
    check(() => event.call.answer());
    caller = event.call;
  },

  callConnected(id) {
    if (is(caller, id)) {
      sayToCaller(MENU);
    } else if (caller && agent) {
      check(() => connect(caller, agent));
      log('caller and agent connected');
      try {
        recording = startRecording(caller, { stereo: true, maxSeconds: 3600 });
      } catch (error) {
        if (!refusalOf(error)) throw error;
        log(`refused: ${refusalText(error)}`);
      }
    }
  },

  callToneReceived(id, tone) {
    // Once an agent is dialed, key presses are the caller's business with
    // the agent (they are relayed to the agent's phone).
    if (!is(caller, id) || agent || ending) return;
    if (tone === '1') dial('sales');
    else if (tone === '2') dial('support');
    else sayToCaller(MENU);
  },

  callFailed(id, code, reason) {
    if (is(agent, id)) {
      log(`the agent's call failed: ${code} ${reason}`);
      agent = undefined;
      apologise();
    }
  },

  callPlaybackFinished(id) {
    if (ending && is(caller, id)) check(() => caller.hangup());
  },

  callDisconnected(id) {
    // The side that hung up goes, and takes the other with it. (The other's
    // own end, which follows, concerns neither any more.)
    let other;
    if (is(caller, id)) {
      caller = undefined;
      other = agent;
      agent = undefined;
    } else if (is(agent, id)) {
      agent = undefined;
      other = caller;
      caller = undefined;
    } else {
      return;
    }
    if (other) check(() => other.hangup());
    // The recording ends with the call; the session waits until it is kept.
    if (recording === undefined) check(() => terminate());
  },

  recordingFinished(id, _call, durationMs, error) {
    if (error === undefined) log(`recording ${id} kept: ${durationMs} ms`);
    else log(`recording ${id} not kept: ${error}`);
    recording = undefined;
    if (!caller) check(() => terminate());
  },

  callHeld(id) {
    log(`call ${id} is on hold`);
  },

  callResumed(id) {
    log(`call ${id} is off hold`);
  },
});

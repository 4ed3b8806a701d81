// ivr-menu: a phone menu whose text operators keep in the app's storage.
//
// It answers every call and says the menu, the key `menu` (or a default when
// nobody has set it). A digit the caller presses says the key `menu/<digit>`,
// `#` hangs up, and when the call ends the session ends. Operators change the
// texts through the storage API without touching the scenario; every session
// of the app reads the same keys.
import { terminate } from 'sessionbox:scenario/session@0.2.0';
import { check, getText, log, refusalText, scenario } from './sessionbox.js';
export { mediaEvents } from './sessionbox.js';

const DEFAULT_MENU = 'Press 1 for sales, 2 for support, # to hang up.';
const NO_SUCH_OPTION = 'No such option.';

const calls = new Map();

// The text at `key`, or `fallback` when it is absent or storage refused:
// a caller hears something either way.
function textOr(key, fallback) {
  try {
    return getText(key) ?? fallback;
  } catch (error) {
    log(`refused: ${refusalText(error)}`);
    return fallback;
  }
}

function say(id, text) {
  const call = calls.get(id);
  if (call) check(() => call.say(text, 'en-US'));
}

export const appEvents = scenario({
  callAlerting(event) {
    check(() => event.call.answer());
    calls.set(event.call.id(), event.call);
  },

  callConnected(id) {
    say(id, textOr('menu', DEFAULT_MENU));
  },

  callToneReceived(id, tone) {
    if (tone === '#') {
      const call = calls.get(id);
      if (call) check(() => call.hangup());
    } else if (/^[0-9]$/.test(tone)) {
      say(id, textOr(`menu/${tone}`, NO_SUCH_OPTION));
    }
    // Other keys (*, A-D) choose nothing.
  },

  callDisconnected(id) {
    calls.delete(id);
    check(() => terminate());
  },
});

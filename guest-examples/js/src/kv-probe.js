// kv-probe: the conformance suite's probe of storage and variables.
//
// Each HTTP request's body is one command, its tokens separated by single
// spaces; the answer is one line of text/plain, the same in every language:
//
//   set KEY VALUE [TTL]          ok
//   get KEY                      value VALUE | none
//   del KEY                      deleted | absent
//   incr KEY TIMES               ok LAST (increment by 1, TIMES times)
//   cas KEY EXPECTED VALUE       swapped | lost (EXPECTED `-`: must be absent)
//   list PREFIX LIMIT [AFTER]    keys K1,K2 next NEXT (PREFIX `-`: empty; NEXT `-`: none)
//   var NAME                     value V
//   logvar NAME                  ok (and logs `the value is V`)
//   stop                         ok (and ends the session)
//
// A refusal answers `refused KIND: REASON`; anything else is 400
// `unknown command`. In `terminating` it saves a key and in `terminated`
// reads it back, logging the answers, to show what each phase allows.
import { terminate } from 'sessionbox:scenario/session@0.2.0';
import {
  compareAndSet,
  deleteKey,
  getText,
  increment,
  listKeys,
  log,
  refusalOf,
  response,
  scenario,
  setText,
  variable,
} from './sessionbox.js';
export { mediaEvents } from './sessionbox.js';

class UnknownCommand extends Error {}

// TTL, TIMES and LIMIT: decimal, within WIT's u32.
function u32(token) {
  const value = Number(token);
  if (!/^[0-9]+$/.test(token) || value > 0xffffffff) throw new UnknownCommand();
  return value;
}

// Each command: its least and most arguments, and what it answers.
const commands = {
  set: [2, 3, (key, value, ttl) => {
    setText(key, value, ttl === undefined ? undefined : u32(ttl));
    return 'ok';
  }],
  get: [1, 1, (key) => {
    const value = getText(key);
    return value === undefined ? 'none' : `value ${value}`;
  }],
  del: [1, 1, (key) => (deleteKey(key) ? 'deleted' : 'absent')],
  incr: [2, 2, (key, times) => {
    const count = u32(times);
    if (count === 0) throw new UnknownCommand();
    let sum;
    for (let i = 0; i < count; i += 1) sum = increment(key, 1);
    return `ok ${sum}`;
  }],
  // `-`, here and as a prefix, stands for what a token cannot spell: none, ''.
  cas: [3, 3, (key, expected, value) => {
    const swapped = compareAndSet(key, expected === '-' ? undefined : expected, value);
    return swapped ? 'swapped' : 'lost';
  }],
  list: [2, 3, (prefix, limit, after) => {
    const page = listKeys(prefix === '-' ? '' : prefix, { after, limit: u32(limit) });
    return `keys ${page.keys.join(',')} next ${page.next ?? '-'}`;
  }],
  var: [1, 1, (name) => `value ${variable(name)}`],
  logvar: [1, 1, (name) => {
    log(`the value is ${variable(name)}`);
    return 'ok';
  }],
  stop: [0, 0, () => {
    terminate();
    return 'ok';
  }],
};

// The answer to `line`; throws UnknownCommand.
function run(line) {
  const [name, ...args] = line.split(' ');
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!command || args.length < command[0] || args.length > command[1]) throw new UnknownCommand();
  try {
    return command[2](...args);
  } catch (error) {
    const refusal = refusalOf(error);
    if (!refusal) throw error;
    return `refused ${refusal.kind}: ${refusal.reason}`;
  }
}

export const appEvents = scenario({
  httpRequest(request) {
    try {
      return response(200, run(new TextDecoder().decode(request.body)), 'text/plain');
    } catch (error) {
      if (!(error instanceof UnknownCommand)) throw error;
      return response(400, 'unknown command', 'text/plain');
    }
  },

  // Storage is still open while terminating (saving the final state is what
  // it is for) and closed once terminated.
  terminating() {
    log(`terminating: ${run('set saved-in-terminating yes')}`);
  },

  terminated() {
    log(`terminated: ${run('get saved-in-terminating')}`);
  },
});

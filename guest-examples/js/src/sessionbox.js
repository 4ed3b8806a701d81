// Helpers shared by the example scenarios, a tiny SDK (imported with a
// relative path; componentize-js bundles it into each component).
import { write } from 'sessionbox:scenario/logger@0.2.0';
import {
  compareAndSet as storageCompareAndSet,
  delete as storageDelete,
  get as storageGet,
  increment as storageIncrement,
  listKeys as storageListKeys,
  set as storageSet,
} from 'sessionbox:scenario/storage@0.2.0';
import { get as variableGet } from 'sessionbox:scenario/variables@0.2.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Appends one line to the session log. Works in every phase. */
export const log = write;

/**
 * The refusal record a host call failed with, or undefined for any other
 * error. A host function returning `result<_, refusal>` throws on `err`: the
 * thrown value is a ComponentError whose `payload` is the record
 * ({ capability, phase, kind, reason }, enums as their WIT names).
 */
export function refusalOf(error) {
  const payload = error && typeof error === 'object' ? error.payload : undefined;
  return payload && typeof payload === 'object' && 'capability' in payload ? payload : undefined;
}

/**
 * The text of a refusal, as every Sessionbox SDK prints it:
 * `{capability} refused in {phase}: {reason}`. Any other error is shown as
 * its message.
 */
export function refusalText(error) {
  const refusal = refusalOf(error);
  if (refusal) return `${refusal.capability} refused in ${refusal.phase}: ${refusal.reason}`;
  return error instanceof Error ? error.message : String(error);
}

/**
 * Runs `action` (a host call); a refusal is logged as `refused: ...`, any
 * other error is thrown on.
 */
export function check(action) {
  try {
    action();
  } catch (error) {
    if (!refusalOf(error)) throw error;
    log(`refused: ${refusalText(error)}`);
  }
}

/**
 * An `http-response`: `body` is text (sent as UTF-8) or a Uint8Array, with
 * a content-type header when `contentType` is given.
 */
export function response(status, body = '', contentType = undefined) {
  return {
    status,
    headers: contentType ? [{ name: 'content-type', value: contentType }] : [],
    body: typeof body === 'string' ? encoder.encode(body) : body,
  };
}

/**
 * The text of an error `fetch()` rejected with. Its message is generic
 * (`NetworkError when attempting to fetch resource`); the wasi:http error
 * code, when there is one, is in its `cause`.
 */
export function fetchErrorText(error) {
  const cause = error && error.cause ? ` (${error.cause})` : '';
  return `${error instanceof Error ? error.message : String(error)}${cause}`;
}

const ignore = () => {};

const defaultHandlers = {
  started: ignore,
  callAlerting: ignore,
  httpRequest: () => ({ status: 404, headers: [], body: new Uint8Array() }),
  websocket: ignore,
  newWebsocketFailed: ignore,
  terminating: ignore,
  terminated: ignore,
  timerFired: ignore,
  callConnected: ignore,
  callDisconnected: ignore,
  callFailed: ignore,
  callMessageReceived: ignore,
  callToneReceived: ignore,
  callPlaybackFinished: ignore,
  websocketMessage: ignore,
  websocketClosed: ignore,
  callHeld: ignore,
  callResumed: ignore,
  recordingFinished: ignore,
  streamEnded: ignore,
};

// The handlers given to the module's `scenario(...)`, which `mediaEvents`
// delivers to, so a scenario names every event in one place, as in the
// other SDKs. The defaults serve a module that writes `appEvents` itself.
let events = defaultHandlers;

/**
 * The `app-events` export of a scenario: `handlers` with every event it does
 * not define filled in. componentize-js wants every function of
 * `app-events` and of `media-events` (`callHeld`, ..., whose handlers go in
 * `handlers` too); the defaults do nothing, except `httpRequest`, which
 * answers 404 with an empty body (as the Rust SDK does).
 *
 *   export const appEvents = scenario({ started(event) { ... } });
 *   export { mediaEvents } from './sessionbox.js';
 */
export function scenario(handlers) {
  events = { ...defaultHandlers, ...handlers };
  return events;
}

/**
 * The `media-events` export (world 0.3.0), for every scenario module to
 * re-export: componentize-js takes exports from the module it builds only.
 * It calls the handlers given to `scenario(...)`.
 */
export const mediaEvents = {
  callHeld: (call) => events.callHeld(call),
  callResumed: (call) => events.callResumed(call),
  recordingFinished: (recording, call, durationMs, error) =>
    events.recordingFinished(recording, call, durationMs, error),
  streamEnded: (id, call, reason) => events.streamEnded(id, call, reason),
};

// --- Storage and variables ---------------------------------------------------
//
// `storage` is the app's key-value store, shared by every session of the app
// and kept across sessions; values are bytes. These helpers add text and JSON
// values and defaults for the optional arguments; the module
// 'sessionbox:scenario/storage@0.2.0' has the same functions without them.
// Like every host call, each throws a refusal (see `refusalOf`), e.g. a key
// or value over the host's limit (`rule`) or a full quota (`quota`).
// `ttl`, where taken, is in seconds; without it a key stays until deleted.

// Text is stored as UTF-8; bytes and undefined pass as they are.
const bytesOf = (value) => (typeof value === 'string' ? encoder.encode(value) : value);

/** The value of `key` as a Uint8Array, or undefined when it is absent. */
export function getBytes(key) {
  return storageGet(key);
}

/**
 * The value of `key` as text (UTF-8; invalid bytes read as U+FFFD), or
 * undefined when it is absent.
 */
export function getText(key) {
  const bytes = getBytes(key);
  return bytes === undefined ? undefined : decoder.decode(bytes);
}

/** The value of `key` parsed as JSON, or undefined when it is absent. */
export function getJson(key) {
  const text = getText(key);
  return text === undefined ? undefined : JSON.parse(text);
}

/** Sets `key` to `bytes` (a Uint8Array), replacing any value and TTL. */
export function setBytes(key, bytes, ttl) {
  storageSet(key, bytes, ttl);
}

/** Sets `key` to `text`, stored as UTF-8. */
export function setText(key, text, ttl) {
  setBytes(key, encoder.encode(text), ttl);
}

/** Sets `key` to `value` as JSON text. */
export function setJson(key, value, ttl) {
  setText(key, JSON.stringify(value), ttl);
}

/** Deletes `key`: true if it was there. */
export function deleteKey(key) {
  return storageDelete(key);
}

/**
 * Adds `delta` (a number or BigInt, at least 0; default 1) to the integer at
 * `key`, atomically across every session of the app (an absent key counts
 * as 0), and returns the sum. The sum is a BigInt, as WIT's s64:
 * `Number(sum)` where a number is wanted, e.g. for JSON.stringify.
 */
export function increment(key, delta = 1) {
  // componentize-js 0.23 aborts the whole component when it passes a negative
  // s64 to the host (ComponentizeJS issue #343): throw here instead, where the
  // scenario can catch it.
  if (delta < 0) throw new RangeError('increment: no negative delta in componentize-js 0.23 (ComponentizeJS#343)');
  return storageIncrement(key, delta);
}

/**
 * Sets `key` to `value` only if its value is `expected` now (undefined: only
 * if it is absent), atomically. Values are Uint8Arrays or text (UTF-8). True
 * if it was set; false if another writer got there first.
 */
export function compareAndSet(key, expected, value, ttl) {
  return storageCompareAndSet(key, bytesOf(expected), bytesOf(value), ttl);
}

/**
 * One page of the keys that start with `prefix`, in byte order: those after
 * the key `after` (undefined: from the first), at most `limit` (at most
 * 1,000). Returns `{ keys, next }`, where `next` is the `after` of the next
 * page, or undefined on the last page.
 */
export function listKeys(prefix = '', { after, limit = 100 } = {}) {
  return storageListKeys(prefix, after, limit);
}

/** Every key that starts with `prefix`, fetched a page at a time. */
export function* allKeys(prefix = '', pageSize = 100) {
  let after;
  do {
    const page = listKeys(prefix, { after, limit: pageSize });
    yield* page.keys;
    after = page.next;
  } while (after !== undefined);
}

/**
 * The value of the app's variable or secret `name`, from the server's
 * configuration; a name the app does not have is refused (`unknown`). The
 * host shows a secret's value as `[secret]` wherever it would reach the log.
 */
export function variable(name) {
  return variableGet(name);
}

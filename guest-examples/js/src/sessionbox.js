// Helpers shared by the example scenarios, a tiny SDK (imported with a
// relative path; componentize-js bundles it into each component).
import { write } from 'sessionbox:scenario/logger@0.1.0';

/** Appends one line to the session log. Works in every phase. */
export const log = write;

/**
 * The refusal record a host call failed with, or undefined for any other
 * error. A host function returning `result<_, refusal>` throws on `err`: the
 * thrown value is a ComponentError whose `payload` is the record
 * ({ capability, phase, reason }, enums as lowercase names).
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

const ignore = () => {};

/**
 * The `app-events` export of a scenario: `handlers` with every event it does
 * not define filled in. componentize-js wants all sixteen functions of the
 * world; the defaults do nothing, except `httpRequest`, which answers 404
 * with an empty body (as the Rust SDK does).
 *
 *   export const appEvents = scenario({ started(event) { ... } });
 */
export function scenario(handlers) {
  return {
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
    ...handlers,
  };
}

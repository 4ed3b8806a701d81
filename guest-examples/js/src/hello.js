// hello: logs every event it receives, one line each.
//
// The smallest scenario that touches every event: run it with
// `sessionbox run target/guests/js/hello.wasm --memory-mib 64 --http 'GET /hi'`
// and read the log.
import { log, refusalText } from './sessionbox.js';
export { mediaEvents } from './sessionbox.js';

// Calls and sockets are kept so they stay in their state: dropping the handle
// only forgets it, but a scenario that keeps nothing cannot act on them later.
const calls = [];
const sockets = [];

export const appEvents = {
  started(event) {
    log(`started session=${event.sessionId} custom-data=${event.customData}`);
    // What a guest prints goes to the session log too.
    console.log('hello from stdout');
  },

  callAlerting(event) {
    log(
      `call-alerting caller=${event.callerId} destination=${event.destination} ` +
        `display-name=${event.displayName} headers=${event.headers.length}`,
    );
    // Not answered: the call stays alerting.
    calls.push(event.call);
  },

  httpRequest(request) {
    log(`http-request ${request.method} ${request.path} body=${request.body.length}`);
    return {
      status: 200,
      headers: [{ name: 'content-type', value: 'text/plain' }],
      body: new TextEncoder().encode(`hello ${request.method} ${request.path}`),
    };
  },

  websocket(event) {
    log(`websocket ${event.path} id=${event.socket.id()}`);
    sockets.push(event.socket);
  },

  newWebsocketFailed(event) {
    log(`new-websocket-failed ${event.reason}`);
  },

  terminating() {
    log('terminating');
  },

  terminated() {
    log('terminated');
  },

  timerFired(id) {
    log(`timer-fired ${id}`);
  },

  callConnected(call) {
    log(`call-connected ${call}`);
  },

  callDisconnected(call) {
    log(`call-disconnected ${call}`);
  },

  callFailed(call, code, reason) {
    log(`call-failed ${call} ${code} ${reason}`);
  },

  callMessageReceived(call, text) {
    log(`call-message-received ${call} ${text}`);
  },

  callToneReceived(call, tone) {
    log(`call-tone-received ${call} ${tone}`);
  },

  callPlaybackFinished(call) {
    log(`call-playback-finished ${call}`);
  },

  websocketMessage(socket, message) {
    let reply;
    if (message.tag === 'text') {
      log(`websocket-message ${socket} text=${message.val}`);
      reply = { tag: 'text', val: `echo: ${message.val}` };
    } else {
      log(`websocket-message ${socket} binary=${message.val.length}`);
      reply = { tag: 'binary', val: message.val };
    }
    // Echo it back on the same socket.
    const ws = sockets.find((ws) => ws.id() === socket);
    if (ws) {
      try {
        ws.send(reply);
      } catch (error) {
        log(`refused: ${refusalText(error)}`);
      }
    }
  },

  websocketClosed(socket, code, reason) {
    log(`websocket-closed ${socket} ${code} ${reason}`);
  },
};

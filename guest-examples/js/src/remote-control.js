// remote-control: a JSON API on the session's access URL.
//
// - `GET /status`: the session id, how many requests it has served (counting
//   this one) and its custom data.
// - `POST /custom-data`: replaces the custom data with the request body.
// - `/stop` (any method): ends the session.
//
// Every request is logged as `<METHOD> <path> -> <status>`.
import { customData, id, setCustomData, terminate } from 'sessionbox:scenario/session@0.2.0';
import { log, refusalText, scenario } from './sessionbox.js';
export { mediaEvents } from './sessionbox.js';

let requests = 0;

function route(request) {
  // Route on the path alone; a query string does not change the route.
  const path = request.path.split('?')[0];
  if (request.method === 'GET' && path === '/status') {
    return [200, { session: id(), requests, custom_data: customData() }];
  }
  if (request.method === 'POST' && path === '/custom-data') {
    const data = new TextDecoder().decode(request.body);
    try {
      setCustomData(data);
      return [200, { custom_data: data }];
    } catch (error) {
      // E.g. longer than the host's limit.
      return [400, { error: refusalText(error) }];
    }
  }
  if (path === '/stop') {
    // The session ends after this handler returns, so the response still
    // goes out.
    try {
      terminate();
    } catch (error) {
      log(`refused: ${refusalText(error)}`);
    }
    log('stopping');
    return [200, { stopping: true }];
  }
  return [404, { error: `no route for ${request.method} ${request.path}` }];
}

export const appEvents = scenario({
  httpRequest(request) {
    requests += 1;
    const [status, body] = route(request);
    log(`${request.method} ${request.path} -> ${status}`);
    return {
      status,
      headers: [{ name: 'content-type', value: 'application/json' }],
      body: new TextEncoder().encode(JSON.stringify(body)),
    };
  },

  terminating() {
    log('terminating');
  },

  terminated() {
    log('terminated');
  },
});

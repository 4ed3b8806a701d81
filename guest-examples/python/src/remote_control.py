"""remote-control: a JSON API on the session's access URL.

- `GET /status`: the session id, how many requests it has served (counting
  this one) and its custom data.
- `POST /custom-data`: replaces the custom data with the request body.
- `/stop` (any method): ends the session.

Every request is logged as `<METHOD> <path> -> <status>`.
"""

import json

from componentize_py_types import Err
from wit_world.imports import session

from sessionbox import Scenario, log, refusal_text, response


class AppEvents(Scenario):
    def __init__(self):
        self.requests = 0

    def route(self, request):
        # Route on the path alone; a query string does not change the route.
        path = request.path.split("?")[0]
        if request.method == "GET" and path == "/status":
            return 200, {
                "session": session.id(),
                "requests": self.requests,
                "custom_data": session.custom_data(),
            }
        if request.method == "POST" and path == "/custom-data":
            data = request.body.decode("utf-8", errors="replace")
            try:
                session.set_custom_data(data)
            except Err as error:
                # E.g. longer than the host's limit.
                return 400, {"error": refusal_text(error)}
            return 200, {"custom_data": data}
        if path == "/stop":
            # The session ends after this handler returns, so the response
            # still goes out.
            try:
                session.terminate()
            except Err as error:
                log(f"refused: {refusal_text(error)}")
            log("stopping")
            return 200, {"stopping": True}
        return 404, {"error": f"no route for {request.method} {request.path}"}

    def http_request(self, request):
        self.requests += 1
        status, body = self.route(request)
        log(f"{request.method} {request.path} -> {status}")
        return response(status, json.dumps(body, separators=(",", ":")), "application/json")

    def terminating(self):
        log("terminating")

    def terminated(self):
        log("terminated")

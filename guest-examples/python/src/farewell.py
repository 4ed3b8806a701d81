"""farewell: notifies a webhook when the session ends.

The session's custom data is the webhook URL. In `terminating` a scenario may
make exactly one outbound HTTP request and set no timers: the first POST goes
out, while a timer and a second POST show what refusals look like (a refusal
record, and wasi:http's `HttpRequestDenied`). `POST /stop` on the access URL
ends the session.
"""

import json

from componentize_py_types import Err
from wit_world.imports import session, timers

from sessionbox import HttpError, Scenario, http_post, log, refusal_text, response


class AppEvents(Scenario):
    def __init__(self):
        self.webhook = ""

    def started(self, event):
        log(f"started, webhook={event.custom_data}")
        self.webhook = event.custom_data

    def http_request(self, request):
        if request.path.split("?")[0] != "/stop":
            return response(404)
        try:
            session.terminate()
        except Err as error:
            log(f"refused: {refusal_text(error)}")
        return response(200)

    def terminating(self):
        # Timers ended with the running phase.
        try:
            timers.set_timeout(1000)
        except Err as error:
            log(f"timer refused: {refusal_text(error)}")
        body = json.dumps({"session": session.id(), "event": "terminating"}, separators=(",", ":")).encode()
        try:
            status, _ = http_post(self.webhook, "application/json", body)
            log(f"webhook answered {status}")
        except HttpError as error:
            log(f"webhook failed: {error}")
        # One request is all `terminating` allows: this one is refused.
        try:
            status, _ = http_post(self.webhook, "application/json", body)
            log(f"second request answered {status}")
        except HttpError as error:
            log(f"second request refused: {error}")

    def terminated(self):
        log("terminated")

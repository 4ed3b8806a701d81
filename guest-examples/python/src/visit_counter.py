"""visit-counter: counts the requests to every session of the app.

Each request to a session's access URL adds 1 to the app's key `visits` and
answers the new count, `{"visits":N}`. The key is in the app's storage, not in
this session, so every session of the app counts on the same number, and it
outlives them; increments from concurrent sessions all count. A refusal (e.g.
the host's storage is unavailable) answers 503 with its text.
"""

import json

from componentize_py_types import Err

from sessionbox import Scenario, increment, refusal_text, response


class AppEvents(Scenario):
    def http_request(self, request):
        try:
            visits = increment("visits")
        except Err as error:
            return response(503, refusal_text(error), "text/plain")
        return response(200, json.dumps({"visits": visits}, separators=(",", ":")), "application/json")

"""webhook: tells a web service that the session ended.

In `terminating` it POSTs `{"session":"<id>","custom_data":"<custom data>"}`
to the URL in the app's variable `webhook_url`, authorized by the secret
`webhook_token`. Both come from the server's configuration, so the same
scenario serves apps with different endpoints, and the token is in no source
file. `terminating` allows exactly one outbound request: this one.

The token must not reach the log: only the URL and the status are logged.
(Were it written there, the host would show `[secret]` in its place.)
"""

import json

from componentize_py_types import Err
from wit_world.imports import session

from sessionbox import HttpError, Scenario, http_request, log, refusal_text, variable


class AppEvents(Scenario):
    def terminating(self):
        try:
            url = variable("webhook_url")
            token = variable("webhook_token")
        except Err as error:
            # E.g. an app without the variable: `variables refused in terminating: ...`.
            log(refusal_text(error))
            return
        # As JavaScript's JSON.stringify writes it: compact, non-ASCII as is.
        body = json.dumps(
            {"session": session.id(), "custom_data": session.custom_data()},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        headers = [("content-type", "application/json"), ("authorization", f"Bearer {token}")]
        try:
            status, _ = http_request("POST", url, headers, body)
            log(f"notified {url}: {status}")
        except HttpError as error:
            log(f"webhook failed: {error}")

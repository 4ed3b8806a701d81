"""call-handler: answers an incoming call, plays a prompt, hangs up.

Call actions are signalling-level: each returns at once, and its outcome
arrives later as a call event naming the call's id. So the scenario keeps its
calls by id and moves each one on from the event handlers:
alerting -> answer -> connected -> say -> playback finished -> hang up ->
disconnected. With nothing left to do, the session idles into `terminating`.
"""

from sessionbox import Scenario, check, log


class AppEvents(Scenario):
    def __init__(self):
        self.calls = {}

    def call_alerting(self, event):
        log(f"answering call from {event.caller_id}")
        # Refusals are ordinary values: `check` logs them and carries on.
        check(event.call.answer)
        self.calls[event.call.id()] = event.call

    def call_connected(self, id):
        log("connected")
        call = self.calls.get(id)
        if call is not None:
            check(lambda: call.say("Thanks for calling Sessionbox. Goodbye.", "en-US"))

    def call_playback_finished(self, id):
        log("prompt finished, hanging up")
        call = self.calls.get(id)
        if call is not None:
            check(call.hangup)

    def call_disconnected(self, id):
        log("call ended")
        self.calls.pop(id, None)

    def call_failed(self, id, code, reason):
        # Never connected (e.g. the caller gave up): nothing left to do.
        self.calls.pop(id, None)

    def terminating(self):
        log("terminating")

    def terminated(self):
        log("terminated")

"""call-centre: the everyday flow. It answers a caller, speaks a menu, takes
a digit, dials an agent and connects the two.

Key 1 dials `sales` and key 2 dials `support`, through the node's SIP trunk
(in `sessionbox run`, calls are answered in process). Any other key repeats
the menu. When the agent answers, caller and agent are connected, and the
conversation is recorded in stereo (the caller left, the agent right). If
the agent cannot be reached, the caller hears an apology and the call ends.
When either side hangs up, so does the other, and the session ends once the
recording is kept.
"""

from componentize_py_types import Err
from wit_world.imports import calls, media, session

from sessionbox import Scenario, check, log, refusal_text

MENU = "Press 1 for sales, or 2 for support."
SORRY = "Sorry, nobody can take your call now. Goodbye."


def is_call(call, id):
    return call is not None and call.id() == id


class AppEvents(Scenario):
    def __init__(self):
        self.caller = None
        self.agent = None
        # The apology is playing: the call ends when it finishes.
        self.ending = False
        # The conversation's recording, while it runs.
        self.recording = None

    def say_to_caller(self, text):
        if self.caller is not None:
            check(lambda: self.caller.say(text, None))

    def dial(self, team):
        self.say_to_caller(f"Connecting you to {team}.")
        try:
            options = calls.DialOptions(caller_id=None, display_name=None, headers=[])
            self.agent = calls.dial(team, options)
        except Err as error:
            log(f"refused: {refusal_text(error)}")
            self.apologise()
            return
        log(f"dialing {team}")

    def apologise(self):
        self.ending = True
        self.say_to_caller(SORRY)

    def call_alerting(self, event):
        if self.caller is not None:
            # One caller per session.
            check(lambda: event.call.reject(486))
            return
        check(event.call.answer)
        self.caller = event.call

    def call_connected(self, id):
        if is_call(self.caller, id):
            self.say_to_caller(MENU)
        elif self.caller is not None and self.agent is not None:
            check(lambda: media.connect(self.caller, self.agent))
            log("caller and agent connected")
            options = media.RecordingOptions(stereo=True, max_seconds=3600)
            try:
                self.recording = media.start_recording(self.caller, options)
            except Err as error:
                log(f"refused: {refusal_text(error)}")

    def call_tone_received(self, id, tone):
        # Once an agent is dialed, key presses are the caller's business with
        # the agent (they are relayed to the agent's phone).
        if not is_call(self.caller, id) or self.agent is not None or self.ending:
            return
        if tone == "1":
            self.dial("sales")
        elif tone == "2":
            self.dial("support")
        else:
            self.say_to_caller(MENU)

    def call_failed(self, id, code, reason):
        if is_call(self.agent, id):
            log(f"the agent's call failed: {code} {reason}")
            self.agent = None
            self.apologise()

    def call_playback_finished(self, id):
        if self.ending and is_call(self.caller, id):
            check(self.caller.hangup)

    def call_disconnected(self, id):
        # The side that hung up goes, and takes the other with it. (The
        # other's own end, which follows, concerns neither any more.)
        if is_call(self.caller, id):
            self.caller = None
            other, self.agent = self.agent, None
        elif is_call(self.agent, id):
            self.agent = None
            other, self.caller = self.caller, None
        else:
            return
        if other is not None:
            check(other.hangup)
        # The recording ends with the call; the session waits until it is kept.
        if self.recording is None:
            check(session.terminate)

    def recording_finished(self, recording, call, duration_ms, error):
        if error is None:
            log(f"recording {recording} kept: {duration_ms} ms")
        else:
            log(f"recording {recording} not kept: {error}")
        self.recording = None
        if self.caller is None:
            check(session.terminate)

    def call_held(self, id):
        log(f"call {id} is on hold")

    def call_resumed(self, id):
        log(f"call {id} is off hold")

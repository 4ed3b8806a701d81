"""ivr-menu: a phone menu whose text operators keep in the app's storage.

It answers every call and says the menu, the key `menu` (or a default when
nobody has set it). A digit the caller presses says the key `menu/<digit>`,
`#` hangs up, and when the call ends the session ends. Operators change the
texts through the storage API without touching the scenario; every session of
the app reads the same keys.
"""

from componentize_py_types import Err
from wit_world.imports import session

from sessionbox import Scenario, check, get_text, log, refusal_text

DEFAULT_MENU = "Press 1 for sales, 2 for support, # to hang up."
NO_SUCH_OPTION = "No such option."
DIGITS = frozenset("0123456789")


def text_or(key, fallback):
    """The text at `key`, or `fallback` when it is absent or storage refused:
    a caller hears something either way."""
    try:
        text = get_text(key)
    except Err as error:
        log(f"refused: {refusal_text(error)}")
        return fallback
    return fallback if text is None else text


class AppEvents(Scenario):
    def __init__(self):
        self.calls = {}

    def say(self, id, text):
        call = self.calls.get(id)
        if call is not None:
            check(lambda: call.say(text, "en-US"))

    def call_alerting(self, event):
        check(event.call.answer)
        self.calls[event.call.id()] = event.call

    def call_connected(self, id):
        self.say(id, text_or("menu", DEFAULT_MENU))

    def call_tone_received(self, id, tone):
        if tone == "#":
            call = self.calls.get(id)
            if call is not None:
                check(call.hangup)
        elif tone in DIGITS:
            self.say(id, text_or(f"menu/{tone}", NO_SUCH_OPTION))
        # Other keys (*, A-D) choose nothing.

    def call_disconnected(self, id):
        self.calls.pop(id, None)
        check(session.terminate)

"""kv-probe: the conformance suite's probe of storage and variables.

Each HTTP request's body is one command, its tokens separated by single
spaces; the answer is one line of text/plain, the same in every language:

    set KEY VALUE [TTL]          ok
    get KEY                      value VALUE | none
    del KEY                      deleted | absent
    incr KEY TIMES               ok LAST (increment by 1, TIMES times)
    cas KEY EXPECTED VALUE       swapped | lost (EXPECTED `-`: must be absent)
    list PREFIX LIMIT [AFTER]    keys K1,K2 next NEXT (PREFIX `-`: empty; NEXT `-`: none)
    var NAME                     value V
    logvar NAME                  ok (and logs `the value is V`)
    stop                         ok (and ends the session)

A refusal answers `refused KIND: REASON`; anything else is 400
`unknown command`. In `terminating` it saves a key and in `terminated` reads
it back, logging the answers, to show what each phase allows.
"""

import re

from componentize_py_types import Err
from wit_world.imports import session

from sessionbox import (
    Scenario,
    compare_and_set,
    delete_key,
    get_text,
    increment,
    list_keys,
    log,
    response,
    set_text,
    variable,
)


class UnknownCommand(Exception):
    pass


def u32(token):
    """TTL, TIMES and LIMIT: decimal, within WIT's u32."""
    if not re.fullmatch(r"[0-9]+", token) or int(token) > 0xFFFFFFFF:
        raise UnknownCommand
    return int(token)


def set_(key, value, ttl=None):
    set_text(key, value, None if ttl is None else u32(ttl))
    return "ok"


def get(key):
    value = get_text(key)
    return "none" if value is None else f"value {value}"


def delete(key):
    return "deleted" if delete_key(key) else "absent"


def incr(key, times):
    count = u32(times)
    if count == 0:
        raise UnknownCommand
    for _ in range(count):
        total = increment(key, 1)
    return f"ok {total}"


# `-`, here and as a prefix, stands for what a token cannot spell: none, "".
def cas(key, expected, value):
    swapped = compare_and_set(key, None if expected == "-" else expected, value)
    return "swapped" if swapped else "lost"


def list_(prefix, limit, after=None):
    page = list_keys("" if prefix == "-" else prefix, after, u32(limit))
    return f"keys {','.join(page.keys)} next {'-' if page.next is None else page.next}"


def var(name):
    return f"value {variable(name)}"


def logvar(name):
    log(f"the value is {variable(name)}")
    return "ok"


def stop():
    session.terminate()
    return "ok"


# Each command: its least and most arguments, and what it answers.
COMMANDS = {
    "set": (2, 3, set_),
    "get": (1, 1, get),
    "del": (1, 1, delete),
    "incr": (2, 2, incr),
    "cas": (3, 3, cas),
    "list": (2, 3, list_),
    "var": (1, 1, var),
    "logvar": (1, 1, logvar),
    "stop": (0, 0, stop),
}


def run(line):
    """The answer to `line`; raises UnknownCommand."""
    name, *args = line.split(" ")
    if name not in COMMANDS:
        raise UnknownCommand
    least, most, command = COMMANDS[name]
    if not least <= len(args) <= most:
        raise UnknownCommand
    try:
        return command(*args)
    except Err as error:
        refusal = error.value
        return f"refused {refusal.kind.name.lower()}: {refusal.reason}"


class AppEvents(Scenario):
    def http_request(self, request):
        try:
            return response(200, run(request.body.decode("utf-8", errors="replace")), "text/plain")
        except UnknownCommand:
            return response(400, "unknown command", "text/plain")

    # Storage is still open while terminating (saving the final state is what
    # it is for) and closed once terminated.
    def terminating(self):
        log(f"terminating: {run('set saved-in-terminating yes')}")

    def terminated(self):
        log(f"terminated: {run('get saved-in-terminating')}")

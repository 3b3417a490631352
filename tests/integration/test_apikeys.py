#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""'inferctl apikey' against a real inferd on a private bus: the keys of the HTTP API.

What is checked is what an administrator relies on: the key is printed once
and stored only as a hash, in a file nobody else can read; a revoked key is
gone at once and for good; a broken key file is reported, not overwritten;
and another user can neither make, see nor revoke keys.
"""

import hashlib
import json
import os
import re
import socket
import stat
import subprocess
import urllib.error
import urllib.request

from harness import Env, SkipTest, TestFailure, check, check_eq, run

NOBODY = 65534
KEY_RE = re.compile(r"^sk-inferd-[A-Za-z0-9_-]{43}$")
ID_RE = re.compile(r"^[0-9a-f]{16}$")


def key_file(node):
    return os.path.join(node.state, "api-keys")


def one_line(r, *words):
    lines = r.stderr.strip().splitlines()
    check(len(lines) == 1, f"expected one line on stderr, got: {r.stderr!r}")
    for w in words:
        check(w.lower() in lines[0].lower(), f"{w!r} not in: {lines[0]!r}")
    return lines[0]


def create(e, name):
    r = e.ctl("apikey", "create", name)
    key = r.stdout.strip()
    check(KEY_RE.match(key), f"not a key on stdout: {r.stdout!r}")
    check_eq(r.stdout, key + "\n", "stdout of apikey create")
    m = re.search(r"\b([0-9a-f]{16})\b", r.stderr)
    check(m, f"no ID on stderr: {r.stderr!r}")
    check(key not in r.stderr, "the key was repeated on stderr")
    return m.group(1), key


def test_create_list_revoke():
    with Env() as e:
        n = e.node().start()
        r = e.ctl("apikey")
        check("No API keys" in r.stdout, f"apikey with no keys: {r.stdout!r}")
        check_eq(e.ctl_json("apikey", "list"), [], "list --json with no keys")

        id1, key1 = create(e, "laptop")
        id2, key2 = create(e, "CI runner #2")
        check(id1 != id2 and key1 != key2, "two keys alike")

        keys = e.ctl_json("apikey", "list")
        check_eq([(k["id"], k["name"]) for k in keys], [(id1, "laptop"), (id2, "CI runner #2")], "listed keys")
        for k in keys:
            check(ID_RE.match(k["id"]), k)
            check(k["created_realtime_usec"] > 1_600_000_000 * 10**6, k)
            check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", k["created"]), k)
            check("key" not in k, "list shows a key")
        table = e.ctl("apikey", "list").stdout
        check(table.splitlines()[0].split() == ["ID", "NAME", "CREATED"], f"table header:\n{table}")
        check(id1 in table and "CI runner #2" in table, f"table:\n{table}")
        check(key1 not in table and key2 not in table, "the table shows a key")

        # --json for scripts: the key in an object on stdout, nothing on stderr.
        r = e.ctl("apikey", "create", "scripted", "--json")
        obj = json.loads(r.stdout)
        check(KEY_RE.match(obj["key"]) and ID_RE.match(obj["id"]) and obj["name"] == "scripted", obj)
        check_eq(r.stderr, "", "stderr of apikey create --json")

        e.ctl("apikey", "revoke", id1)
        check_eq([k["id"] for k in e.ctl_json("apikey", "list")], [id2, obj["id"]], "keys after revoke")
        r = e.ctl("apikey", "revoke", id1, check_rc=1)
        one_line(r, "No API key has the ID", id1)

        # The keys are in the state directory, not in the process: a restart keeps them.
        n.stop()
        n.start()
        check_eq([k["id"] for k in e.ctl_json("apikey", "list")], [id2, obj["id"]], "keys after a restart")


def test_key_file_holds_hashes_only():
    with Env() as e:
        n = e.node().start()
        kid, key = create(e, "secret holder")
        path = key_file(n)
        st = os.stat(path)
        check_eq(stat.S_IMODE(st.st_mode), 0o600, "mode of the key file")
        check_eq(st.st_uid, os.geteuid(), "owner of the key file")
        with open(path) as f:
            text = f.read()
        body = key[len("sk-inferd-"):]
        check(key not in text and body not in text, "the key file holds the key")
        digest = hashlib.sha256(key.encode()).hexdigest()
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        check_eq(len(lines), 1, f"lines in the key file:\n{text}")
        fields = lines[0].split(" ", 3)
        check_eq((fields[0], fields[1], fields[3]), (kid, digest, "secret holder"), "the key's line")
        check(not [f for f in os.listdir(n.state) if f.startswith("api-keys.")], "a temporary file was left")


def test_bad_names_and_ids_are_usage_errors():
    with Env() as e:
        e.node().start()
        for name in ["", "x" * 65, " lead", "trail ", "tab\there", "caf\u00e9"]:
            r = e.ctl("apikey", "create", name, check_rc=2)
            one_line(r, "invalid name")
        e.ctl("apikey", "create", "x" * 64)
        for kid in ["", "123", "0123456789abcdeg", "0123456789abcdef0"]:
            one_line(e.ctl("apikey", "revoke", kid, check_rc=2), "invalid ID")
        one_line(e.ctl("apikey", "rotate", check_rc=2), "unknown apikey command")
        one_line(e.ctl("apikey", "create", check_rc=2), "missing arguments")
        one_line(e.ctl("apikey", "list", "extra", check_rc=2), "too many arguments")
        # The daemon checks too, for callers other than inferctl.
        for method, arg, why in [("CreateApiKey", "bad\nname", "Invalid API key name"),
                                 ("RevokeApiKey", "nope", "Invalid API key ID"),
                                 ("RevokeApiKey", "0123456789abcdef", "No API key has the ID")]:
            r = subprocess.run(["busctl", "--address=" + e.bus.address, "call", "org.inferd.infer1",
                                "/org/inferd/infer1", "org.inferd.infer1.Manager", method, "s", arg],
                               capture_output=True, text=True, timeout=30)
            check(r.returncode != 0 and why in r.stderr, f"{method}({arg!r}): {r.stderr!r}")
        check_eq(len(e.ctl_json("apikey", "list")), 1, "keys after refused calls")


def test_broken_key_file_is_reported_not_overwritten():
    with Env() as e:
        n = e.node().start()
        kid, key = create(e, "kept")
        path = key_file(n)
        with open(path, "a") as f:
            f.write("this is not a key line\n")
        with open(path) as f:
            before = f.read()
        line = one_line(e.ctl("apikey", "create", "another", check_rc=1), "api-keys:3:")
        check("expected 'ID SHA256 CREATED NAME'" in line, line)
        one_line(e.ctl("apikey", "list", check_rc=1), "api-keys:3:")
        one_line(e.ctl("apikey", "revoke", kid, check_rc=1), "api-keys:3:")
        with open(path) as f:
            check_eq(f.read(), before, "the broken file after refused changes")
        check("api-keys:3:" in n.read_log(), "the daemon did not log the broken file")
        check(n.proc.poll() is None, "inferd died over a broken key file")

        # Fixed by hand: everything works again, without a restart.
        with open(path, "w") as f:
            f.write(before.replace("this is not a key line\n", ""))
        check_eq([k["id"] for k in e.ctl_json("apikey", "list")], [kid], "keys once the file is fixed")
        # Removed by hand: no keys.
        os.unlink(path)
        check_eq(e.ctl_json("apikey", "list"), [], "keys once the file is gone")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, authorization=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if authorization is not None:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SAMPLE_RE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\[\\"n])*",?)*\})? '
                       r'(-?[0-9.e+-]+|\+Inf)$')


def test_keys_count_over_http_at_once():
    """A key made over D-Bus opens the HTTP API at once, and a revoked one closes it at once."""
    with Env() as e:
        port = free_port()
        e.node(config=f"[Daemon]\nNodeName=node\n[HTTP]\nListen=127.0.0.1:{port}\n").start()
        made_up = "Bearer sk-inferd-" + "A" * 43
        check_eq(http_get(port, "/v1/models")[0], 401, "no key")
        check_eq(http_get(port, "/v1/models", made_up)[0], 401, "a key of the right shape that nobody made")
        kid, key = create(e, "http client")
        check_eq(http_get(port, "/v1/models", "Bearer " + key)[0], 200, "the new key")
        check_eq(http_get(port, "/v1/models", "bearer  " + key)[0], 200, "the scheme in lower case, two spaces")
        check_eq(http_get(port, "/v1/models", "Basic " + key)[0], 401, "another scheme")
        e.ctl("apikey", "revoke", kid)
        check_eq(http_get(port, "/v1/models", "Bearer " + key)[0], 401, "the revoked key")

        status, text = http_get(port, "/metrics")
        check_eq(status, 200, "/metrics")
        for line in text.splitlines():
            check(line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE_RE.match(line),
                  f"not a line of the exposition format: {line!r}")
        counts = {}
        for m in re.finditer(r'^inferd_requests_total\{endpoint="models",model="[^"]*",status="(\d+)"\} (\d+)$',
                             text, re.M):
            counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2))
        check_eq(counts, {"200": 2, "401": 4}, "requests to /v1/models by status, in /metrics")
        check("# TYPE inferd_request_duration_seconds histogram" in text, "no duration histogram")
        check(re.search(r"^inferd_queue_depth 0$", text, re.M), "no queue depth")


def test_other_user_denied():
    if os.geteuid() != 0:
        raise SkipTest("needs root to run inferctl as another user")
    with Env() as e:
        n = e.node().start()
        kid, key = create(e, "mine")
        one_line(e.ctl("apikey", "create", "theirs", user=NOBODY, check_rc=1), "denied")
        one_line(e.ctl("apikey", "list", user=NOBODY, check_rc=1), "denied")
        one_line(e.ctl("apikey", "revoke", kid, user=NOBODY, check_rc=1), "denied")
        check_eq([k["id"] for k in e.ctl_json("apikey", "list")], [kid], "keys after refused calls")
        # Nor can they read the file.
        r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                            "cat", key_file(n)], capture_output=True, text=True)
        check(r.returncode != 0 and r.stdout == "", f"another user read the key file: {r.stdout!r}")


if __name__ == "__main__":
    run(test_create_list_revoke, test_key_file_holds_hashes_only, test_bad_names_and_ids_are_usage_errors,
        test_broken_key_file_is_reported_not_overwritten, test_keys_count_over_http_at_once, test_other_user_denied)

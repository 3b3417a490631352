#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A cluster of real inferd processes on 127.0.0.1.

Each member has its own private bus, state directory, configuration and
port; they form a cluster with 'inferctl cluster init/token/join' and talk
mutual TLS to each other. Nothing is mocked.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (INFERCTL, Bus, Node, SkipTest, TestFailure, check, check_eq, run, run_ctl,  # noqa: E402
                     wait_for)

BUILDDIR = os.environ.get("BUILDDIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
MKMODEL = os.path.join(BUILDDIR, "tools", "inferd-mkmodel")

# Fast failure detection, so the tests take seconds.
TIMINGS = """ProbeInterval=200ms
ProbeTimeout=100ms
SuspectTimeout=1s
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Member:
    """One inferd with its own bus, on its own port."""

    def __init__(self, tmp, name, cluster_extra=""):
        self.name = name
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.bus = Bus(self.dir)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env["DBUS_SESSION_BUS_ADDRESS"] = self.bus.address
        self.env.pop("DBUS_STARTER_ADDRESS", None)
        # No HTTP listener unless cluster_extra names one: parallel daemons would all want 127.0.0.1:8080.
        config = (f"[Daemon]\nNodeName={name}\n[HTTP]\nListen=\n[Cluster]\nListen={self.address}\n" + TIMINGS +
                  cluster_extra)
        self.node = Node(self.env, self.dir, "inferd", config=config)
        self.state = self.node.state

    def start(self):
        self.node.start()
        return self

    def ctl(self, *args, check_rc=0, timeout=120, user=None, input=None):
        return run_ctl(self.env, args, check_rc=check_rc, timeout=timeout, user=user, input=input,
                       what=f"[{self.name}] ")

    def ctl_json(self, *args, **kw):
        return json.loads(self.ctl(*args, "--json", **kw).stdout)

    def members(self):
        return {m["name"] or m["node_id"]: m for m in self.ctl_json("cluster", "members")}

    def kill(self):
        self.node.proc.send_signal(signal.SIGKILL)
        self.node.proc.wait()

    def stop(self):
        self.node.stop()
        self.bus.stop()


class Cluster:
    """Context manager: members in a temporary directory; their logs on failure."""

    def __init__(self, n, names=None, cluster_extra=""):
        self.n = n
        self.names = names or [f"n{i + 1}" for i in range(n)]
        self.cluster_extra = cluster_extra

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="inferd-cluster-")
        os.chmod(self.tmp, 0o755)
        self.members = [Member(self.tmp, name, self.cluster_extra).start() for name in self.names]
        return self

    def add(self, name, cluster_extra=""):
        m = Member(self.tmp, name, cluster_extra or self.cluster_extra).start()
        self.members.append(m)
        return m

    def form(self, members=None):
        """init on the first, then everyone else joins it with a token of their own."""
        members = members or self.members
        first = members[0]
        first.ctl("cluster", "init", "--name", "test")
        for i, m in enumerate(members[1:]):
            token = first.ctl("cluster", "token").stdout.strip()
            # By name too: host names are resolved without stalling the daemon.
            address = first.address if i % 2 == 0 else f"localhost:{first.port}"
            m.ctl("cluster", "join", address, token)
        names = {m.name for m in members}
        for m in members:
            wait_for(lambda m=m: {k for k, v in m.members().items() if v["state"] == "alive"} >= names, timeout=20,
                     what=f"{m.name} to see every member alive")

    def __exit__(self, *exc):
        for m in self.members:
            m.stop()
        if exc[0] is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            sys.stderr.write(f"(test files kept in {self.tmp})\n")
            for m in self.members:
                sys.stderr.write(f"--- {m.name}: {m.node.log_path}\n{m.node.read_log()[-6000:]}\n")
        return False


def test_form_a_cluster():
    with Cluster(3) as c:
        n1, n2, n3 = c.members
        check_eq(n1.ctl_json("cluster", "members"), [], "members before init")
        c.form()
        for m in c.members:
            ms = m.members()
            check_eq(sorted(ms), ["n1", "n2", "n3"], f"members seen by {m.name}")
            check(ms[m.name]["self"], f"{m.name} marks itself")
            for other in c.members:
                check_eq(ms[other.name]["address"], other.address, "advertised address")
        # Shared state arrives: devices and versions of the others.
        ms = wait_for(lambda: all(v["version"] for v in n3.members().values()) and n3.members(), timeout=10,
                      what="state of every member")
        check(ms["n1"]["rtt_usec"] > 0 or ms["n2"]["rtt_usec"] > 0, "round trips are measured")
        # Keys stay private.
        for m in c.members:
            for f in ("node.key", "node.crt", "ca.crt"):
                path = os.path.join(m.state, "cluster", f)
                check(os.path.exists(path), f"{m.name} has {f}")
            mode = stat.S_IMODE(os.stat(os.path.join(m.state, "cluster", "node.key")).st_mode)
            check_eq(mode, 0o600, "node.key mode")
            check_eq(stat.S_IMODE(os.stat(os.path.join(m.state, "cluster")).st_mode), 0o700, "cluster dir mode")
        check(os.path.exists(os.path.join(n1.state, "cluster", "ca.key")), "the first member holds the CA key")
        table = n2.ctl("cluster").stdout
        for name in ("n1", "n2 (self)", "n3", "alive", n3.address):
            check(name in table, f"'{name}' in the members table:\n{table}")
        check(not os.path.exists(os.path.join(n2.state, "cluster", "ca.key")), "joiners do not get the CA key")
        r = n2.ctl("cluster", "token", check_rc=1)
        check("does not hold the cluster CA" in r.stderr, f"a token from a member without the CA: {r.stderr}")
        # The same cluster everywhere.
        fps = {subprocess.run(["busctl", "--address=" + m.bus.address, "get-property", "org.inferd.infer1",
                               "/org/inferd/infer1", "org.inferd.infer1.Manager", "ClusterFingerprint"],
                              capture_output=True, text=True).stdout for m in c.members}
        check_eq(len(fps), 1, "one CA fingerprint")
        check(len(fps.pop()) > 64, "the fingerprint is set")


def test_token_forged_or_replayed_is_refused():
    with Cluster(3) as c:
        n1, n2, n3 = c.members
        n1.ctl("cluster", "init")
        token = n1.ctl("cluster", "token").stdout.strip()
        n2.ctl("cluster", "join", n1.address, token)
        # The same token again: it was used.
        r = n3.ctl("cluster", "join", n1.address, token, check_rc=1)
        check("already used" in r.stderr, f"replay refused: {r.stderr}")
        # A token whose secret was changed (same CA, same id): the proof fails.
        token2 = n1.ctl("cluster", "token").stdout.strip()
        import base64
        raw = bytearray(base64.urlsafe_b64decode(token2.split(".", 1)[1] + "=="))
        raw[-1] ^= 1
        forged = "inferd-join-1." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
        r = n3.ctl("cluster", "join", n1.address, forged, check_rc=1)
        check("proof" in r.stderr.lower() or "secret" in r.stderr.lower(), f"forged token refused: {r.stderr}")
        # And the forged attempt burnt the real one.
        r = n3.ctl("cluster", "join", n1.address, token2, check_rc=1)
        check("already used" in r.stderr, f"burnt token refused: {r.stderr}")
        # Garbage is refused before anything is sent.
        r = n3.ctl("cluster", "join", n1.address, "inferd-join-1.nonsense", check_rc=None)
        check(r.returncode != 0, "garbage token refused")
        # A bad address: inferctl says what is wrong before calling, and the daemon, called
        # directly, says the same (one grammar, daemon/util/address.c).
        r = n3.ctl("cluster", "join", "127.0.0.1:0", token2, check_rc=2)   # a usage error
        check("invalid address '127.0.0.1:0': the port must be a number from 1 to 65535" in r.stderr,
              f"bad port refused by inferctl: {r.stderr}")
        r = subprocess.run(["busctl", "--address=" + n3.bus.address, "call", "org.inferd.infer1",
                            "/org/inferd/infer1", "org.inferd.infer1.Manager", "ClusterJoin", "ss",
                            "[::1", token2], capture_output=True, text=True, env=n3.env, timeout=30)
        check(r.returncode != 0 and "no ']' after the IPv6 address" in r.stderr,
              f"bad address refused by the daemon: {r.stderr}")
        check_eq(n3.ctl_json("cluster", "members"), [], "n3 is in no cluster")
        log = n1.node.read_log()
        check("Refused the join request" in log, "refusals are logged on the issuer")


def s_client(node, address, *args, data=b"hello\n", expect=""):
    """A TLS client that offers the mesh protocol and does not check the server: what an intruder does.
    It stays connected until node logs expect: closing early could reset the connection before the
    server has read what was sent."""
    p = subprocess.Popen(["openssl", "s_client", "-connect", address, "-alpn", "inferd/1", "-tls1_3", "-quiet", *args],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.stdin.write(data)
        p.stdin.flush()
        wait_for(lambda: expect in node.node.read_log(), timeout=15, what=f"the log to say '{expect}'")
    finally:
        p.kill()
        p.wait()


def test_foreign_certificates_are_refused():
    with Cluster(3) as c:
        n1, n2, x = c.members
        c.form([n1, n2])
        x.ctl("cluster", "init", "--name", "other")  # a cluster of its own, with its own CA
        # x believes n1 is one of its members and probes it: the handshake fails.
        n1_id = next(v["node_id"] for v in n1.members().values() if v["self"])
        x.node.stop()
        with open(os.path.join(x.state, "cluster", "members"), "a") as f:
            f.write(f"member {n1_id} {n1.address}\n")
        x.node.start()
        wait_for(lambda: "Refused a connection" in n1.node.read_log(), timeout=15, what="n1 to refuse x")
        wait_for(lambda: x.members().get(n1_id, {}).get("state") == "dead", timeout=15,
                 what="x to give up on n1")
        # x's certificate from a client that goes on regardless: n1 refuses it.
        xdir = os.path.join(x.state, "cluster")
        s_client(n1, n1.address, "-cert", os.path.join(xdir, "node.crt"), "-key", os.path.join(xdir, "node.key"),
                 expect="certificate not signed by this cluster's CA")
        # No certificate at all.
        s_client(n1, n1.address, expect="sent no certificate")
        check_eq(sorted(n1.members()), ["n1", "n2"], "members unchanged")
        check_eq(sorted(k for k, v in n2.members().items()), ["n1", "n2"], "n2's members unchanged")


def test_malformed_frames_close_the_connection():
    with Cluster(2) as c:
        n1, n2 = c.members
        c.form()
        # A member's own certificate, so the bytes reach the frame decoder.
        key = [os.path.join(n2.state, "cluster", f) for f in ("node.crt", "node.key")]
        cases = [
            (b"\xff\xff\xff\xff", "frame of 4294967295 bytes"),
            (b"\x00\x00\x00\x03abc", "malformed frame"),
            (b"\x00\x00\x00\x01\x80", "malformed frame"),  # an empty map: no version
        ]
        for data, reason in cases:
            s_client(n1, n1.address, "-cert", key[0], "-key", key[1], data=data, expect=reason)
        check(n1.node.proc.poll() is None, "n1 is still running")
        ms = n1.members()
        check_eq(ms["n2"]["state"], "alive", "n2 is still a member")


def test_changes_need_authorization():
    if os.geteuid() != 0:
        raise SkipTest("needs root to run inferctl as another user")
    nobody = 65534
    with Cluster(1) as c:
        n1, = c.members
        r = n1.ctl("cluster", "init", user=nobody, check_rc=1)
        check("denied" in r.stderr.lower(), f"init by another user: {r.stderr}")
        n1.ctl("cluster", "init")
        for args in (("cluster", "token"), ("cluster", "leave"), ("cluster", "join", "127.0.0.1:1", "inferd-join-1.AAAA")):
            r = n1.ctl(*args, user=nobody, check_rc=None)
            check(r.returncode != 0 and "denied" in r.stderr.lower(), f"{args} by another user: {r.stderr}")
        # Reading the member list is open to all.
        check_eq(len(n1.ctl_json("cluster", "members", user=nobody)), 1, "members for another user")
        r = n1.ctl("cluster", "init", check_rc=1)
        check("already" in r.stderr, f"a second init: {r.stderr}")


def test_kill_is_detected():
    with Cluster(4) as c:
        c.form()
        n1, n2, n3, n4 = c.members
        t0 = time.time()
        n4.kill()
        for m in (n1, n2, n3):
            wait_for(lambda m=m: m.members()["n4"]["state"] == "dead", timeout=15, what=f"{m.name} to see n4 dead")
        elapsed = time.time() - t0
        # ProbeInterval 200ms, SuspectTimeout 1s (scaled by log10 of 4 members: 1s): well under 5 s.
        check(elapsed < 8, f"detected in {elapsed:.1f}s")
        print(f"# kill -9 detected as dead by every member in {elapsed:.2f}s")
        check("is now dead" in n1.node.read_log(), "the death is logged")
        # Restarted, it finds the cluster again from the members it remembers, and outranks its death.
        n4.node.start()
        for m in (n1, n2, n3):
            wait_for(lambda m=m: m.members()["n4"]["state"] == "alive", timeout=15,
                     what=f"{m.name} to see n4 alive again")
        wait_for(lambda: sorted(n4.members()) == ["n1", "n2", "n3", "n4"], timeout=10,
                 what="n4 to know every member by name after its restart")


def test_leave():
    with Cluster(3) as c:
        c.form()
        n1, n2, n3 = c.members
        n3.ctl("cluster", "leave")
        check_eq(n3.ctl_json("cluster", "members"), [], "n3 is alone")
        check(not os.path.exists(os.path.join(n3.state, "cluster")), "its keys are gone")
        for m in (n1, n2):
            wait_for(lambda m=m: m.members().get("n3", {}).get("state") == "left", timeout=10,
                     what=f"{m.name} to see n3 leave")


def make_model(tmp):
    path = os.path.join(tmp, "synthetic.gguf")
    subprocess.run([MKMODEL, "--dim", "512", "--layers", "6", "--heads", "8", "--kv-heads", "4", "--ff", "1408",
                    "--vocab", "2048", "--ctx", "1024", "--type", "Q8_0", "--seed", "7", "-o", path], check=True,
                   capture_output=True)
    return path


def run_json(m, model, prompt, n):
    return json.loads(m.ctl("run", model, prompt, "--temp", "0", "--max-tokens", str(n), "--json").stdout)


def test_request_is_routed_to_a_peer_and_survives_its_death():
    with Cluster(3) as c:
        n1, n2, n3 = c.members
        c.form()
        path = make_model(c.tmp)
        for m in (n2, n3):
            m.ctl("load", path, "--name", "syn")
        check_eq(n1.ctl_json("models"), [], "n1 has no model")
        wait_for(lambda: all(any(x["name"] == "syn" for x in n1.members()[k]["models"]) for k in ("n2", "n3")),
                 timeout=10, what="n1 to learn where the model is")

        # Served by a peer, the same as running it there.
        ref = run_json(n2, "syn", "Once upon a time", 24)
        got = run_json(n1, "syn", "Once upon a time", 24)
        check_eq(got["tokens"], ref["tokens"], "tokens routed through n1")
        check_eq(got["text"], ref["text"], "text routed through n1")
        chat = ("chat", "syn", "--template", "chatml", "--temp", "0", "--max-tokens", "12", "--json")
        ref_chat = json.loads(n2.ctl(*chat, input=b"Hello there\n").stdout)
        got_chat = json.loads(n1.ctl(*chat, input=b"Hello there\n").stdout)
        check_eq(got_chat["tokens"], ref_chat["tokens"], "a chat routed through n1")

        # A long request; the member serving it dies in the middle.
        n = 160
        ref = run_json(n2, "syn", "The cluster", n)
        check_eq(ref["finish_reason"], "length", "the reference runs to its length")
        proc = subprocess.Popen([INFERCTL, "--bus=session", "run", "syn", "The cluster", "--temp", "0",
                                 "--max-tokens", str(n), "--json"], env=n1.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        # Which member runs it: the Job's Node property.
        victim_name = None

        def find_victim():
            nonlocal victim_name
            tree = subprocess.run(["busctl", "--address=" + n1.bus.address, "tree", "--list", "org.inferd.infer1"],
                                  capture_output=True, text=True).stdout.split()
            jobs = sorted(int(p.rsplit("/", 1)[1]) for p in tree if p.startswith("/org/inferd/infer1/job/"))
            if not jobs:
                return False
            path = f"/org/inferd/infer1/job/{jobs[-1]}"

            def prop(name):
                r = subprocess.run(["busctl", "--address=" + n1.bus.address, "get-property", "org.inferd.infer1",
                                    path, "org.inferd.infer1.Job", name], capture_output=True, text=True)
                return r.stdout.split(None, 1)[1].strip() if r.returncode == 0 else ""
            if prop("State") == '"running"' and int(prop("GeneratedTokens") or 0) >= 8:
                victim_name = prop("Node").strip('"')
                return True
            return False
        wait_for(find_victim, timeout=30, what="the job to be running on a peer with some tokens delivered")
        victim = n2 if victim_name == "n2" else n3
        survivor = n3 if victim is n2 else n2
        victim.kill()
        out, err = proc.communicate(timeout=120)
        check_eq(proc.returncode, 0, f"the client's run succeeds ({err.decode()})")
        got = json.loads(out)
        check_eq(got["finish_reason"], "length", "one complete answer")
        check_eq(len(got["tokens"]), n, "every token, once")
        # Up to the failover the tokens are the reference's; after it the survivor recomputes the same
        # context with prompt processing, which can round differently, so only their number is checked.
        check_eq(got["tokens"][:8], ref["tokens"][:8], "tokens before the failover")
        wait_for(lambda: "moves from member" in n1.node.read_log(), timeout=5, what="the failover to be logged")
        print(f"# job moved from {victim.name} to {survivor.name}; "
              f"{sum(a == b for a, b in zip(got['tokens'], ref['tokens']))}/{n} tokens equal the uninterrupted run")

        # With no member left that serves it: a clear error.
        survivor.ctl("unload", "syn")
        wait_for(lambda: not any(x["name"] == "syn" for v in n1.members().values() if v["state"] == "alive"
                                 for x in v["models"]),
                 timeout=10, what="n1 to learn the model is gone")
        r = n1.ctl("run", "syn", "hello", check_rc=1)
        check("syn" in r.stderr, f"clear error: {r.stderr}")


def test_a_dead_origin_stops_its_jobs():
    with Cluster(2) as c:
        n1, n2 = c.members
        c.form()
        n2.ctl("load", make_model(c.tmp), "--name", "syn")
        wait_for(lambda: any(x["name"] == "syn" for x in n1.members()["n2"]["models"]), timeout=10,
                 what="n1 to learn where the model is")
        proc = subprocess.Popen([INFERCTL, "--bus=session", "run", "syn", "The cluster", "--temp", "0",
                                 "--max-tokens", "900"], env=n1.env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            proc.stdout.read(16)  # some text has arrived: n2 is generating for n1
            n1.kill()
            # Whichever n2 notices first: its answers no longer get through, or n1 is declared dead.
            wait_for(lambda: "stops: the member that asked for it" in n2.node.read_log(), timeout=15,
                     what="n2 to stop the job of its dead origin")
            wait_for(lambda: n2.members()["n2"]["queue"] == 0, timeout=10, what="n2's queue to empty")
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    run(test_form_a_cluster, test_token_forged_or_replayed_is_refused, test_foreign_certificates_are_refused,
        test_malformed_frames_close_the_connection, test_changes_need_authorization, test_kill_is_detected,
        test_leave, test_request_is_routed_to_a_peer_and_survives_its_death, test_a_dead_origin_stops_its_jobs)

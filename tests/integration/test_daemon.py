#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""inferd as a process: config handling, node id, signals, sd_notify."""

import os
import signal
import subprocess

from harness import (INFERD, Env, SkipTest, TestFailure, check, check_eq, notify_socket, run, wait_for)


def test_version_and_help():
    r = subprocess.run([INFERD, "--version"], capture_output=True, text=True)
    check_eq(r.returncode, 0, "inferd --version exit code")
    check(r.stdout.startswith("inferd "), f"version output: {r.stdout!r}")
    r = subprocess.run([INFERD, "--help"], capture_output=True, text=True)
    check_eq(r.returncode, 0, "inferd --help exit code")
    for opt in ("--bus=", "--config=", "--state-dir="):
        check(opt in r.stdout, f"--help does not mention {opt}")
    r = subprocess.run([INFERD, "--bus=tcp"], capture_output=True, text=True)
    check_eq(r.returncode, 2, "inferd --bus=tcp exit code")
    check("--bus" in r.stderr, f"bad --bus error: {r.stderr!r}")


def expect_refused(config, *needles):
    with Env() as e:
        n = e.node(config=config)
        n.start(wait=False)
        rc = n.proc.wait(20)
        log = n.read_log()
        check(rc != 0, "inferd started with a bad config")
        for needle in (n.config, *needles):
            check(needle in log, f"start-up error does not mention {needle!r}:\n{log}")


def test_bad_config_refused_with_file_line_reason():
    expect_refused("[Daemon]\nNodeName=ok\nLogLevel=loud\n", ":3:", "LogLevel=loud")
    expect_refused("[Daemon]\nFrobnicate=yes\n", ":2:", "unknown key 'Frobnicate'")
    expect_refused("[Nope]\nKey=1\n", ":2:", "unknown section [Nope]")
    expect_refused("[Daemon]\nthis line is not ini\n", ":2:", "syntax error")
    expect_refused("[Daemon]\nNodeName=has space\n", ":2:", "NodeName")


def test_missing_explicit_config_refused():
    with Env() as e:
        n = e.node()
        os.unlink(n.config)
        n.start(wait=False)
        check(n.proc.wait(20) != 0, "inferd started without its --config file")
        check("No such file" in n.read_log(), n.read_log())


def test_node_id_is_stable_and_validated():
    with Env() as e:
        n = e.node()
        n.start()
        first = e.busctl("get-property", "org.inferd.infer1", "/org/inferd/infer1",
                         "org.inferd.infer1.Manager", "NodeId").split()[1].strip('"')
        check(len(first) == 32 and all(c in "0123456789abcdef" for c in first), f"node id {first!r}")
        with open(os.path.join(n.state, "node-id")) as f:
            check_eq(f.read().strip(), first, "node-id file")
        n.stop()
        n.start()
        again = e.busctl("get-property", "org.inferd.infer1", "/org/inferd/infer1",
                         "org.inferd.infer1.Manager", "NodeId").split()[1].strip('"')
        check_eq(again, first, "node id after restart")
        n.stop()
        with open(os.path.join(n.state, "node-id"), "w") as f:
            f.write("garbage\n")
        n.start(wait=False)
        check(n.proc.wait(20) != 0, "inferd started with a corrupt node-id file")
        check("node-id" in n.read_log(), n.read_log())


def get_prop(e, prop):
    out = e.busctl("get-property", "org.inferd.infer1", "/org/inferd/infer1", "org.inferd.infer1.Manager", prop)
    return out.split(None, 1)[1].strip().strip('"')


def test_sighup_reloads_and_keeps_old_config_on_error():
    with Env() as e:
        n = e.node(config="[Daemon]\nNodeName=before\n")
        n.start()
        check_eq(get_prop(e, "NodeName"), "before", "NodeName")
        with open(n.config, "w") as f:
            f.write("[Daemon]\nNodeName=after\nLogLevel=debug\n")
        n.signal(signal.SIGHUP)
        wait_for(lambda: get_prop(e, "NodeName") == "after", what="NodeName=after after SIGHUP")
        check_eq(get_prop(e, "LogLevel"), "debug", "LogLevel after reload")
        with open(n.config, "w") as f:
            f.write("[Daemon]\nNodeName=broken name\n")
        n.signal(signal.SIGHUP)
        wait_for(lambda: "Configuration not reloaded" in n.read_log(), what="reload error in the log")
        check(n.proc.poll() is None, "inferd died on a bad config reload")
        check_eq(get_prop(e, "NodeName"), "after", "NodeName after a failed reload")
        check(f"{n.config}:2:" in n.read_log(), "reload error lacks file:line")


def test_sd_notify_ready_watchdog_stopping():
    with Env() as e:
        sock, path = notify_socket(e.tmp)
        n = e.node()
        n.start(wait=False, env_extra={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        seen = []

        def got(word):
            try:
                while True:
                    seen.append(sock.recv(4096).decode())
            except OSError:
                pass
            return any(word in m for m in seen)

        wait_for(lambda: got("READY=1"), what="READY=1")
        check(any("STATUS=" in m for m in seen), f"no STATUS= in {seen}")
        seen.clear()
        wait_for(lambda: got("WATCHDOG=1"), timeout=5, what="WATCHDOG=1 pings")
        n.signal(signal.SIGTERM)
        check_eq(n.proc.wait(10), 0, "exit status after SIGTERM")
        got("")
        check(any("STOPPING=1" in m for m in seen), f"no STOPPING=1 in {seen}")


JOURNAL_SOCKET = "/run/systemd/journal/socket"


def test_logs_to_journal_with_fields():
    """Under systemd (JOURNAL_STREAM names stderr), log records go to the journal socket with fields."""
    if os.path.exists(JOURNAL_SOCKET):
        raise SkipTest("a journald owns the journal socket here")
    if os.geteuid() != 0:
        raise SkipTest("needs root to stand in for journald's socket")
    import socket as so
    os.makedirs(os.path.dirname(JOURNAL_SOCKET), exist_ok=True)
    j = so.socket(so.AF_UNIX, so.SOCK_DGRAM)
    j.bind(JOURNAL_SOCKET)
    j.settimeout(0.2)
    try:
        with Env() as e:
            n = e.node()
            st = os.stat(n.log_path) if os.path.exists(n.log_path) else None
            open(n.log_path, "ab").close()
            st = os.stat(n.log_path)
            n.start(env_extra={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
            records = []

            def started():
                try:
                    while True:
                        records.append(j.recv(65536).decode(errors="replace"))
                except OSError:
                    pass
                return any("MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b01" in r for r in records)

            wait_for(started, what="the start-up record in the journal")
            rec = next(r for r in records if "MESSAGE_ID=3f0c8e3e2a8f4d9c9f6b2a1d7c5e4b01" in r)
            fields = dict(l.split("=", 1) for l in rec.splitlines() if "=" in l)
            check_eq(fields.get("PRIORITY"), "6", "PRIORITY of the start-up record")
            check_eq(fields.get("SYSLOG_IDENTIFIER"), "inferd", "SYSLOG_IDENTIFIER")
            check(len(fields.get("NODE_ID", "")) == 32, f"NODE_ID field: {fields}")
            check("started" in fields.get("MESSAGE", ""), f"MESSAGE: {fields}")
            check(any("DEVICE_NAME=" in r for r in records) or "no Vulkan" in n.read_log(), "no device record")
            check("started" not in n.read_log(), "records went to stderr as well as the journal")
    finally:
        j.close()
        os.unlink(JOURNAL_SOCKET)


def test_sigterm_stops_cleanly():
    with Env() as e:
        n = e.node()
        n.start()
        n.signal(signal.SIGTERM)
        check_eq(n.proc.wait(10), 0, "exit status after SIGTERM")
        check("stopping" in n.read_log(), n.read_log())


def test_second_daemon_refused():
    with Env() as e:
        e.node("one").start()
        two = e.node("two")
        two.start(wait=False)
        check(two.proc.wait(20) != 0, "a second inferd took the name")
        check("already owns" in two.read_log(), two.read_log())


if __name__ == "__main__":
    run(test_version_and_help, test_bad_config_refused_with_file_line_reason, test_missing_explicit_config_refused,
        test_node_id_is_stable_and_validated, test_sighup_reloads_and_keeps_old_config_on_error,
        test_sd_notify_ready_watchdog_stopping, test_logs_to_journal_with_fields, test_sigterm_stops_cleanly, test_second_daemon_refused)

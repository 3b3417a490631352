#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The D-Bus API as clients see it: introspection, activation, authorization, errors."""

import os
import subprocess
import xml.etree.ElementTree as ET

from harness import (INFERD, INFERCTL, SRCDIR, Env, TestFailure, check, check_eq, run, wait_for)

NOBODY = 65534


def normalise(xml_text):
    """The interface as a comparable structure: names, signatures, access, annotations."""
    root = ET.fromstring(xml_text)
    out = {}
    for iface in root.findall("interface"):
        members = []
        for m in iface:
            args = tuple((a.get("name"), a.get("type"), a.get("direction")) for a in m.findall("arg"))
            notes = tuple(sorted((a.get("name"), a.get("value")) for a in m.findall("annotation")))
            members.append((m.tag, m.get("name"), m.get("type"), m.get("access"), args, notes))
        out[iface.get("name")] = sorted(members, key=lambda x: (x[0], x[1]))
    return out


def test_introspection_matches_dbus_xml():
    with Env() as e:
        e.node().start()
        live = e.busctl("call", "org.inferd.infer1", "/org/inferd/infer1", "org.freedesktop.DBus.Introspectable",
                        "Introspect", "--json=short")
        import json
        live_xml = json.loads(live)["data"][0]
        with open(os.path.join(SRCDIR, "dbus", "org.inferd.infer1.Manager.xml")) as f:
            shipped = f.read()
        a, b = normalise(live_xml)["org.inferd.infer1.Manager"], normalise(shipped)["org.inferd.infer1.Manager"]
        if a != b:
            raise TestFailure("dbus/org.inferd.infer1.Manager.xml differs from the live interface:\n"
                              f"live:    {a}\nshipped: {b}")


def test_dbus_activation_starts_daemon():
    with Env() as e:
        state = os.path.join(e.tmp, "activated-state")
        conf = os.path.join(e.tmp, "activated.conf")
        with open(conf, "w") as f:
            f.write("[Daemon]\nNodeName=activated\n")
        log = os.path.join(e.tmp, "activated.log")
        with open(os.path.join(e.bus.servicedir, "org.inferd.infer1.service"), "w") as f:
            f.write("[D-BUS Service]\nName=org.inferd.infer1\n"
                    f"Exec=/bin/sh -c 'exec {INFERD} --bus=session --config={conf} --state-dir={state} >>{log} 2>&1'\n")
        r = e.ctl("status")
        check("activated" in r.stdout, f"inferctl status did not reach the activated daemon:\n{r.stdout}")
        check(os.path.exists(os.path.join(state, "node-id")), "activated daemon made no node id")
        pid = e.busctl("status", "org.inferd.infer1").split("PID=")[1].split()[0]
        os.kill(int(pid), 15)


def test_read_only_calls_open_to_other_users():
    with Env() as e:
        e.node().start()
        r = e.ctl("status", user=NOBODY)
        check("Node" in r.stdout, r.stdout)
        e.ctl("devices", user=NOBODY)


def test_changing_calls_denied_to_other_users_on_session_bus():
    with Env() as e:
        n = e.node()
        n.start()
        r = e.ctl("log-level", "debug", user=NOBODY, check_rc=1)
        check("denied" in r.stderr.lower(), f"no access-denied message: {r.stderr!r}")
        r = e.ctl("reload", user=NOBODY, check_rc=1)
        check("denied" in r.stderr.lower(), f"no access-denied message: {r.stderr!r}")
        out = e.busctl("get-property", "org.inferd.infer1", "/org/inferd/infer1", "org.inferd.infer1.Manager",
                       "LogLevel")
        check('"info"' in out, f"log level changed by a denied call: {out}")
        # The owner may.
        e.ctl("log-level", "debug")
        check_eq(e.ctl("log-level").stdout.strip(), "debug", "log level after SetLogLevel")
        e.ctl("reload")


def test_errors_have_inferd_names():
    with Env() as e:
        e.node().start()
        r = subprocess.run(["busctl", "--address=" + e.bus.address, "call", "org.inferd.infer1",
                            "/org/inferd/infer1", "org.inferd.infer1.Manager", "SetLogLevel", "s", "loud"],
                           capture_output=True, text=True)
        check(r.returncode != 0, "SetLogLevel accepted 'loud'")
        check("Invalid log level" in r.stderr, r.stderr)
        r = e.ctl("log-level", "loud", check_rc=1)
        check("Invalid log level 'loud'" in r.stderr, r.stderr)
        # The error name, as seen on the wire.
        mon = subprocess.run(["busctl", "--address=" + e.bus.address, "--json=short", "call", "org.inferd.infer1",
                              "/org/inferd/infer1", "org.inferd.infer1.Manager", "SetLogLevel", "s", "loud"],
                             capture_output=True, text=True)
        check("org.inferd.infer1.Error.InvalidArgument" in mon.stderr or "Invalid" in mon.stderr, mon.stderr)


def test_system_bus_without_polkit_denies_unprivileged_and_allows_root():
    """On the system bus changes go through polkit; with no polkit daemon, only root may change things."""
    with Env(kind="system") as e:
        n = e.node(bus_flag="--bus=system")
        n.start()
        e.env["DBUS_SYSTEM_BUS_ADDRESS"] = e.bus.address
        r = e.ctl("log-level", "debug", bus="system", user=NOBODY, check_rc=1)
        check("polkit" in r.stderr.lower(), f"expected a polkit error for an unprivileged caller: {r.stderr!r}")
        check(n.proc.poll() is None, "inferd died")
        if os.geteuid() == 0:
            e.ctl("log-level", "debug", bus="system")
            check_eq(e.ctl("log-level", bus="system").stdout.strip(), "debug", "log level set by root")


def test_daemon_exits_when_bus_goes_away():
    with Env() as e:
        n = e.node()
        n.start()
        e.bus.stop()
        rc = n.proc.wait(10)
        check(rc != 0, "inferd should fail when its bus disappears")
        check("connection to the message bus" in n.read_log(), n.read_log())


if __name__ == "__main__":
    run(test_introspection_matches_dbus_xml, test_dbus_activation_starts_daemon,
        test_read_only_calls_open_to_other_users, test_changing_calls_denied_to_other_users_on_session_bus,
        test_errors_have_inferd_names, test_system_bus_without_polkit_denies_unprivileged_and_allows_root,
        test_daemon_exits_when_bus_goes_away)

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The files inferd ships for systemd and D-Bus, checked with the real tools."""

import os
import shutil
import subprocess

from harness import (INFERD, SRCDIR, Env, SkipTest, TestFailure, check, check_eq, run)

NOBODY = 65534
BUILDDIR = os.environ.get("BUILDDIR", "")


def test_unit_verifies_clean():
    if not shutil.which("systemd-analyze"):
        raise SkipTest("systemd-analyze is not installed")
    with open(os.path.join(BUILDDIR, "units", "inferd.service")) as f:
        unit = f.read()
    check("Type=notify" in unit and "WatchdogSec=" in unit and "BusName=org.inferd.infer1" in unit, unit)
    with Env() as e:
        # Point ExecStart= at the built binary, which verify requires to exist.
        lines = [("ExecStart=" + INFERD + " --bus=system") if l.startswith("ExecStart=") else l
                 for l in unit.splitlines()]
        path = os.path.join(e.tmp, "inferd.service")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        env = dict(e.env, SYSTEMD_LOG_TARGET="console")
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", path], capture_output=True, text=True, env=env)
        check_eq(r.returncode, 0, f"systemd-analyze verify exit code ({r.stdout}{r.stderr})")
        check(not (r.stdout + r.stderr).strip(), f"systemd-analyze verify complained:\n{r.stdout}{r.stderr}")


def test_system_bus_policy():
    """With the real system bus policy: only root owns the name; anyone reads; changes need polkit."""
    with Env(kind="system-policy") as e:
        state = os.path.join(e.tmp, "s2")
        os.makedirs(state)
        os.chmod(state, 0o777)
        r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                            INFERD, "--bus=system", "--config=/dev/null", "--state-dir=" + state],
                           capture_output=True, text=True, env=e.env, timeout=30)
        check(r.returncode != 0, "an unprivileged inferd took org.inferd.infer1 on the system bus")
        check("org.inferd.infer1" in r.stderr, f"unclear error: {r.stderr}")
        if os.geteuid() != 0:
            raise SkipTest("the rest needs root (only root may own the name)")
        n = e.node(bus_flag="--bus=system")
        n.start()
        r = e.ctl("status", bus="system", user=NOBODY)
        check("Node" in r.stdout, r.stdout)
        e.ctl("devices", bus="system", user=NOBODY)
        r = e.ctl("reload", bus="system", user=NOBODY, check_rc=1)
        check("denied" in r.stderr.lower(), r.stderr)
        e.ctl("reload", bus="system")


POLKITD = "/usr/lib/polkit-1/polkitd"
ACTIONS_DIR = "/usr/share/polkit-1/actions"
RULES_DIR = "/etc/polkit-1/rules.d"


def test_real_polkit_decides_on_the_system_bus():
    """A real polkitd on the private system bus: its rules grant one action to nobody and deny the other."""
    if not os.path.exists(POLKITD):
        raise SkipTest("polkitd is not installed")
    if os.geteuid() != 0:
        raise SkipTest("needs root to run polkitd and register the actions")
    action_file = os.path.join(ACTIONS_DIR, "org.inferd.infer1.policy")
    rule_file = os.path.join(RULES_DIR, "50-inferd-test-%d.rules" % os.getpid())
    installed_action = False
    if not os.path.exists(action_file):
        shutil.copy(os.path.join(SRCDIR, "dbus", "org.inferd.infer1.policy"), action_file)
        installed_action = True
    with open(rule_file, "w") as f:
        f.write('polkit.addRule(function(action, subject) {\n'
                '  if (action.id == "org.inferd.infer1.set-log-level" && subject.user == "nobody")\n'
                '    return polkit.Result.YES;\n'
                '});\n')
    pk = None
    try:
        with Env(kind="system") as e:
            pk = subprocess.Popen([POLKITD, "--no-debug"], env=e.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
            import time
            deadline = time.time() + 20
            while "org.freedesktop.PolicyKit1" not in e.busctl("list", "--acquired"):
                check(pk.poll() is None and time.time() < deadline, "polkitd did not start")
                time.sleep(0.1)
            n = e.node(bus_flag="--bus=system")
            n.start()
            # Granted by the rule: polkit answers yes, the call re-runs and succeeds.
            e.ctl("log-level", "notice", bus="system", user=NOBODY)
            check_eq(e.ctl("log-level", bus="system").stdout.strip(), "notice", "log level set through polkit")
            # Not granted: the action's default is auth_admin and nobody has no agent.
            r = e.ctl("reload", bus="system", user=NOBODY, check_rc=1)
            check("org.inferd.infer1.reload" in r.stderr and "not available" not in r.stderr,
                  f"expected polkit's refusal: {r.stderr!r}")
            check(n.proc.poll() is None, "inferd died")
    finally:
        if pk:
            pk.terminate()
            pk.wait()
        os.unlink(rule_file)
        if installed_action:
            os.unlink(action_file)


def test_polkit_actions_and_activation_file():
    import xml.etree.ElementTree as ET
    tree = ET.parse(os.path.join(SRCDIR, "dbus", "org.inferd.infer1.policy"))
    ids = {a.get("id") for a in tree.getroot().findall("action")}
    with open(os.path.join(SRCDIR, "daemon", "util", "names.h")) as f:
        names = f.read()
    import re
    used = set(re.findall(r'"(org\.inferd\.infer1\.[a-z-]+)"', names))
    check_eq(ids, used, "polkit actions shipped vs. used by the daemon")
    with open(os.path.join(SRCDIR, "dbus", "org.inferd.infer1.service")) as f:
        act = f.read()
    check("SystemdService=dbus-org.inferd.infer1.service" in act, act)
    with open(os.path.join(BUILDDIR, "units", "inferd.service")) as f:
        check("Alias=dbus-org.inferd.infer1.service" in f.read(), "the unit lacks the activation alias")


if __name__ == "__main__":
    run(test_unit_verifies_clean, test_system_bus_policy, test_real_polkit_decides_on_the_system_bus,
        test_polkit_actions_and_activation_file)

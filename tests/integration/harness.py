# SPDX-License-Identifier: MIT
"""Real daemons on private buses for the integration tests.

Every test gets its own dbus-daemon (a private "session" bus in a temporary
directory), its own state directory and its own inferd. Nothing is mocked:
the test drives the built inferd through the built inferctl and reads real
output. Paths to the binaries come from meson through the environment.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

INFERD = os.path.abspath(os.environ.get("INFERD", "build/daemon/inferd"))
INFERCTL = os.path.abspath(os.environ.get("INFERCTL", "build/ctl/inferctl"))
SRCDIR = os.path.abspath(os.environ.get("SRCDIR", os.path.join(os.path.dirname(__file__), "..", "..")))

SKIP = 77


class TestFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def check_eq(a, b, what=""):
    if a != b:
        raise TestFailure(f"{what}: expected {b!r}, got {a!r}")


BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>{type}</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{servicedir}</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


# The default policy of Debian's system bus (/usr/share/dbus-1/system.conf)
# plus inferd's own policy file: what the real system bus would enforce.
SYSTEM_POLICY_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{servicedir}</servicedir>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


class Bus:
    """A private dbus-daemon with its own activation directory.

    kind: "session" (anyone may do anything), "system" (the same, but typed
    as a system bus), or "system-policy" (the real system bus policy with
    dbus/org.inferd.infer1.conf).
    """

    def __init__(self, tmp, kind="session"):
        self.dir = os.path.join(tmp, "bus")
        self.servicedir = os.path.join(self.dir, "services")
        os.makedirs(self.servicedir)
        os.chmod(tmp, 0o755)
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "socket")
        self.address = "unix:path=" + self.socket
        conf = os.path.join(self.dir, "bus.conf")
        with open(conf, "w") as f:
            if kind == "system-policy":
                f.write(SYSTEM_POLICY_BUS_CONF.format(socket=self.socket, servicedir=self.servicedir,
                                                      policy=os.path.join(SRCDIR, "dbus", "org.inferd.infer1.conf")))
            else:
                f.write(BUS_CONF.format(type=kind, socket=self.socket, servicedir=self.servicedir))
        self.proc = subprocess.Popen(["dbus-daemon", "--nofork", "--nopidfile", "--config-file=" + conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.time() > deadline:
                raise TestFailure("dbus-daemon did not start: " + self.proc.stderr.read().decode())
            time.sleep(0.02)
        os.chmod(self.socket, 0o777)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Node:
    """One inferd on a private bus."""

    def __init__(self, env, tmp, name="node", config=None, extra_args=(), bus_flag="--bus=session"):
        self.env = env
        self.tmp = tmp
        self.state = os.path.join(tmp, name, "state")
        os.makedirs(self.state, exist_ok=True)
        self.config = os.path.join(tmp, name, "inferd.conf")
        with open(self.config, "w") as f:
            # No HTTP listener unless a test asks for one: parallel daemons would all want 127.0.0.1:8080.
            f.write(config if config is not None else "[Daemon]\nNodeName=%s\n[HTTP]\nListen=\n" % name)
        self.log_path = os.path.join(tmp, name, "inferd.log")
        self.args = [INFERD, bus_flag, "--config=" + self.config, "--state-dir=" + self.state, *extra_args]
        self.proc = None

    def start(self, wait=True, env_extra=None):
        env = dict(self.env)
        if env_extra:
            env.update(env_extra)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise TestFailure(f"inferd exited with {self.proc.returncode}:\n{self.read_log()}")
            r = subprocess.run(["busctl", "--address=" + self.env["DBUS_SESSION_BUS_ADDRESS"], "status",
                                "org.inferd.infer1"], capture_output=True, env=self.env)
            if r.returncode == 0:
                return
            time.sleep(0.05)
        raise TestFailure("inferd did not take its bus name in time:\n" + self.read_log())

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()


def run_ctl(env, args, check_rc=0, timeout=60, user=None, bus="session", input=None, what=""):
    """Runs inferctl (as another user with user=UID); checks its exit status unless check_rc is None."""
    cmd = [INFERCTL, "--bus=" + bus, *args]
    if user is not None:
        cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups", *cmd]
    r = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, input=input)
    r.stdout = r.stdout.decode(errors="replace")
    r.stderr = r.stderr.decode(errors="replace")
    if check_rc is not None and r.returncode != check_rc:
        raise TestFailure(f"{what}{' '.join(cmd)} exited {r.returncode}, expected {check_rc}\n"
                          f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


class Env:
    """Context manager: a temporary directory, a private bus, helpers to run inferctl."""

    def __init__(self, kind="session"):
        self.kind = kind

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="inferd-test-")
        self.bus = Bus(self.tmp, self.kind)
        self.env = dict(os.environ)
        self.env["DBUS_SESSION_BUS_ADDRESS"] = self.bus.address
        if self.kind.startswith("system"):
            self.env["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus.address
        self.env.pop("DBUS_STARTER_ADDRESS", None)
        self.nodes = []
        return self

    def node(self, name="node", **kw):
        n = Node(self.env, self.tmp, name, **kw)
        self.nodes.append(n)
        return n

    def ctl(self, *args, check_rc=0, timeout=60, user=None, bus="session"):
        return run_ctl(self.env, args, check_rc=check_rc, timeout=timeout, user=user, bus=bus)

    def ctl_json(self, *args, **kw):
        r = self.ctl(*args, "--json", **kw)
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise TestFailure(f"inferctl {' '.join(args)} --json printed invalid JSON ({e}): {r.stdout!r}")

    def busctl(self, *args, check_rc=0):
        r = subprocess.run(["busctl", "--address=" + self.bus.address, *args], capture_output=True,
                           env=self.env, timeout=30)
        if check_rc is not None and r.returncode != check_rc:
            raise TestFailure(f"busctl {' '.join(args)} exited {r.returncode}: {r.stderr.decode()}")
        return r.stdout.decode()

    def __exit__(self, *exc):
        for n in self.nodes:
            n.stop()
        self.bus.stop()
        if exc[0] is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            sys.stderr.write(f"(test files kept in {self.tmp})\n")
            for n in self.nodes:
                sys.stderr.write(f"--- {n.log_path}\n{n.read_log()}\n")
        return False


def run(*tests):
    """Runs test functions as TAP, one line each; exit 1 if any failed."""
    print(f"1..{len(tests)}")
    failed = 0
    for i, t in enumerate(tests, 1):
        name = t.__name__
        try:
            t()
            print(f"ok {i} - {name}")
        except SkipTest as e:
            print(f"ok {i} - {name} # SKIP {e}")
        except Exception as e:  # noqa: BLE001 - report every failure as a test result
            failed += 1
            print(f"not ok {i} - {name}")
            for line in str(e).splitlines() or [type(e).__name__]:
                print("# " + line)
        sys.stdout.flush()
    sys.exit(1 if failed else 0)


class SkipTest(Exception):
    pass


def wait_for(pred, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise TestFailure(f"timed out waiting for {what}")


def notify_socket(tmp):
    """An AF_UNIX datagram socket like systemd's NOTIFY_SOCKET."""
    path = os.path.join(tmp, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    return s, path

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""inferctl against a real inferd: output, JSON, and failures a user meets."""

import os
import signal
import subprocess
import time

from harness import (INFERCTL, Env, TestFailure, check, check_eq, run, wait_for)


def test_status_json_and_human():
    with Env() as e:
        n = e.node(config="[Daemon]\nNodeName=alpha\n")
        n.start()
        s = e.ctl_json("status")
        check_eq(s["node_name"], "alpha", "node_name")
        check(len(s["node_id"]) == 32, f"node_id {s['node_id']!r}")
        check(s["host_memory_total"] >= s["host_memory_available"] > 0, f"host memory {s}")
        check(s["daemon_rss"] > 1 << 20, f"daemon RSS {s['daemon_rss']} is implausible")
        check(s["uptime_usec"] > 0, "uptime")
        check(isinstance(s["devices"], list), "devices is not a list")
        for d in s["devices"]:
            check(d["memory_used"] + d["memory_free"] > 0, f"device memory {d}")
        h = e.ctl("status").stdout
        for word in ("alpha", s["node_id"], "Version", "Uptime"):
            check(word in h, f"human status lacks {word!r}:\n{h}")


def test_devices_lists_vulkan_devices():
    with Env() as e:
        e.node().start()
        devs = e.ctl_json("devices")
        check(isinstance(devs, list), "devices --json is not a list")
        if not devs:
            raise TestFailure("no Vulkan device found (lavapipe from mesa-vulkan-drivers should be one)")
        keys = {"index", "name", "vendor", "vendor_id", "device_id", "type", "driver", "driver_info",
                "api_version", "device_local_memory", "subgroup_size", "fp16", "int8", "active"}
        for i, d in enumerate(devs):
            check(keys <= set(d), f"device lacks keys {keys - set(d)}")
            check_eq(d["index"], i, "device index")
            check(d["device_local_memory"] > 0, f"device {d['name']} reports no memory")
            check(d["type"] in ("discrete", "integrated", "virtual", "cpu", "other"), d["type"])
            check(isinstance(d["fp16"], bool) and isinstance(d["int8"], bool), "fp16/int8 not booleans")
        cpu = [d for d in devs if d["driver"] == "llvmpipe"]
        if cpu:
            check_eq(cpu[0]["type"], "cpu", "lavapipe type")
            check(cpu[0]["subgroup_size"] >= 4, "lavapipe subgroup size")
        table = e.ctl("devices").stdout
        check(devs[0]["name"] in table and "MEMORY" in table, f"human table:\n{table}")


def test_devices_selection_from_config():
    """[Engine] Devices= picks the devices the engine opens; auto means GPUs, else the CPU."""
    with Env() as e:
        n = e.node(config="[Engine]\nDevices=auto\n")
        n.start()
        devs = e.ctl_json("devices")
        gpus = [d for d in devs if d["type"] in ("discrete", "integrated", "virtual")]
        expect = gpus if gpus else devs
        check_eq([d["index"] for d in devs if d["active"]], [d["index"] for d in expect], "active devices (auto)")
        n.stop()
        n2 = e.node("none", config="[Engine]\nDevices=none\n")
        n2.start()
        check(not any(d["active"] for d in e.ctl_json("devices")), "Devices=none left a device active")
        n2.stop()
        n3 = e.node("missing", config="[Engine]\nDevices=0 41\n")
        n3.start()
        check("device 41" in n3.read_log(), "no warning about a device the host lacks")
        if devs:
            check(e.ctl_json("devices")[0]["active"], "device 0 not active with Devices=0 41")


def test_no_vulkan_driver_still_serves():
    """Without any Vulkan driver the daemon runs, says why in its log, and lists no devices."""
    with Env() as e:
        n = e.node()
        n.start(env_extra={"VK_DRIVER_FILES": "/nonexistent.json", "VK_ICD_FILENAMES": "/nonexistent.json"})
        check_eq(e.ctl_json("devices"), [], "devices without a driver")
        check("No devices" in e.ctl("devices").stdout, "human output without devices")
        check_eq(e.ctl_json("status")["devices"], [], "status devices without a driver")
        check("Vulkan" in n.read_log(), f"no hint about Vulkan in the log:\n{n.read_log()}")


def test_version():
    with Env() as e:
        e.node().start()
        v = e.ctl_json("version")
        check_eq(v["inferctl"], v["inferd"], "client and daemon versions")
        check("inferd" in e.ctl("version").stdout, "human version")


def test_daemon_not_running_one_clear_line():
    with Env() as e:
        r = e.ctl("status", check_rc=1)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        check_eq(len(lines), 1, f"expected one line of error, got {r.stderr!r}")
        check("not running" in lines[0] and "inferd" in lines[0], lines[0])
        r = e.ctl("devices", bus="system", check_rc=1)
        check(r.stderr.strip(), "no error for the system bus")


def test_daemon_killed_while_waiting():
    with Env() as e:
        n = e.node()
        n.start()
        n.signal(signal.SIGSTOP)
        p = subprocess.Popen([INFERCTL, "--bus=session", "status"], env=e.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        check(p.poll() is None, "inferctl returned although the daemon was stopped")
        n.proc.kill()
        n.proc.wait()
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            raise TestFailure("inferctl hung after the daemon was killed")
        check(p.returncode != 0, "inferctl succeeded without a daemon")
        check("inferd" in err and len(err.strip().splitlines()) == 1, f"unclear error: {err!r}")


def test_help_everywhere_and_usage_errors():
    with Env() as e:
        for verb in ("status", "devices", "version", "reload", "log-level"):
            r = e.ctl(verb, "--help")
            check(verb in r.stdout, f"inferctl {verb} --help:\n{r.stdout}")
        r = e.ctl("--help")
        for verb in ("status", "devices", "version"):
            check(verb in r.stdout, f"inferctl --help lacks {verb}")
        r = e.ctl("frobnicate", check_rc=2)
        check("frobnicate" in r.stderr, r.stderr)
        e.ctl("status", "--no-such-option", check_rc=2)


if __name__ == "__main__":
    run(test_status_json_and_human, test_devices_lists_vulkan_devices, test_devices_selection_from_config,
        test_no_vulkan_driver_still_serves, test_version,
        test_daemon_not_running_one_clear_line, test_daemon_killed_while_waiting,
        test_help_everywhere_and_usage_errors)

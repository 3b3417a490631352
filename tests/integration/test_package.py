#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Builds the Debian package from a clean copy of the tree and runs lintian on it."""

import os
import shutil
import subprocess
import tempfile

from harness import (SRCDIR, SkipTest, TestFailure, check, run)


def test_dpkg_buildpackage_and_lintian():
    for tool in ("dpkg-buildpackage", "lintian", "dh", "git"):
        if not shutil.which(tool):
            raise SkipTest(f"{tool} is not installed")
    tmp = tempfile.mkdtemp(prefix="inferd-pkg-")
    try:
        src = os.path.join(tmp, "inferd")
        files = subprocess.run(["git", "-C", SRCDIR, "ls-files", "-co", "--exclude-standard"], capture_output=True,
                               text=True, check=True).stdout.split("\n")
        for rel in filter(None, files):
            if not os.path.exists(os.path.join(SRCDIR, rel)):
                continue
            os.makedirs(os.path.join(src, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(os.path.join(SRCDIR, rel), os.path.join(src, rel))
        r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, capture_output=True, text=True)
        if r.returncode != 0:
            raise TestFailure("dpkg-buildpackage failed:\n" + (r.stdout + r.stderr)[-4000:])
        debs = [f for f in os.listdir(tmp) if f.startswith("inferd_") and f.endswith(".deb")]
        check(debs, f"no inferd .deb in {os.listdir(tmp)}")
        deb = os.path.join(tmp, debs[0])
        contents = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
        for path in ("./usr/sbin/inferd", "./usr/bin/inferctl", "inferd.service", "inferd.socket",
                     "./usr/share/dbus-1/system.d/org.inferd.infer1.conf",
                     "./usr/share/dbus-1/system-services/org.inferd.infer1.service",
                     "./usr/share/polkit-1/actions/org.inferd.infer1.policy",
                     "man8/inferd.8", "man1/inferctl.1", "man5/inferd.conf.5"):
            check(path in contents, f"the package lacks {path}")
        changes = [f for f in os.listdir(tmp) if f.endswith(".changes")][0]
        r = subprocess.run(["lintian", "--fail-on", "error", os.path.join(tmp, changes)], capture_output=True,
                           text=True)
        errors = [l for l in r.stdout.splitlines() if l.startswith("E:")]
        if r.returncode != 0 or errors:
            raise TestFailure("lintian reports errors:\n" + r.stdout + r.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(test_dpkg_buildpackage_and_lintian)

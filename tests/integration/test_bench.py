#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""inferctl bench ops on the machine's Vulkan device (lavapipe in CI): a figure for every kernel and type."""

import json
import os
import subprocess

from harness import INFERCTL, SkipTest, TestFailure, check, check_eq, run

WEIGHT_TYPES = {"F32", "F16", "Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K"}


def bench(*args, timeout=900, env=None):
    r = subprocess.run([INFERCTL, "bench", "ops", "--quick", *args], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    if r.returncode != 0 and "no Vulkan device" in r.stderr:
        raise SkipTest("no Vulkan device")
    check_eq(r.returncode, 0, f"inferctl bench ops exit code ({r.stderr})")
    return r


def test_every_kernel_and_type_has_figures():
    out = json.loads(bench("--json").stdout)
    check(out["copy_gb_per_s"] > 0, f"copy bandwidth {out['copy_gb_per_s']}")
    seen = {}
    for res in out["results"]:
        check(res["time_us"] > 0 and res["gb_per_s"] > 0, f"no figure for {res}")
        # Loose: on a CPU device caches make some kernels beat the streaming copy.
        check(0 < res["bandwidth_fraction"] < 20, f"implausible fraction {res}")
        seen.setdefault(res["kernel"], set()).add(res["type"])
    for k in ("matvec", "matmul"):
        check_eq(seen.get(k), WEIGHT_TYPES, f"types benchmarked for {k}")
    for k in ("get_rows", "rmsnorm", "rope", "softmax", "swiglu", "add", "mul", "argmax", "topk",
              "attn_prefill", "attn_decode"):
        check(k in seen, f"no figure for {k}")
    # " int-dot" marks the quantised figures of devices that multiply with integer dot products.
    shapes = {r["shape"].removesuffix(" int-dot") for r in out["results"] if r["kernel"] == "matvec"}
    check({"4096x4096", "14336x4096", "4096x14336"} <= shapes, f"matvec shapes {shapes}")


def test_filter_and_table():
    r = bench("--filter=matvec_Q8_0")
    lines = [l for l in r.stdout.splitlines() if l.startswith("matvec")]
    check_eq(len(lines), 3, f"rows for --filter=matvec_Q8_0:\n{r.stdout}")
    check(all("Q8_0" in l for l in lines), r.stdout)
    check("copy bandwidth" in r.stdout and "GB/s" in r.stdout, r.stdout)


def test_int_dot_marked():
    """The shape says when quantised weights were multiplied with integer dot products."""
    for value in ("0", "1"):
        out = json.loads(bench("--json", "--filter=matvec_Q4_0", env={"INFERD_GPU_INT_DOT": value}).stdout)
        shapes = {r["shape"] for r in out["results"]}
        if value == "0":
            check_eq(shapes, {"4096x4096", "14336x4096", "4096x14336"}, "shapes with float arithmetic")
        else:
            # Rows of 4096 columns fit any device's shared memory as integers; 14336 may not.
            check({"4096x4096 int-dot", "14336x4096 int-dot"} <= shapes, f"shapes with integer dot products {shapes}")
    out = json.loads(bench("--json", "--filter=matvec_F16", env={"INFERD_GPU_INT_DOT": "1"}).stdout)
    check(all("int-dot" not in r["shape"] for r in out["results"]), f"F16 has no integer path: {out['results']}")


def test_bad_arguments():
    r = subprocess.run([INFERCTL, "bench"], capture_output=True, text=True)
    check_eq(r.returncode, 2, "exit code for bench without an argument")
    r = subprocess.run([INFERCTL, "bench", "ops", "-p", "8"], capture_output=True, text=True)
    check_eq(r.returncode, 2, "exit code for a model-benchmark option given to bench ops")
    r = subprocess.run([INFERCTL, "bench", "ops", "--device=99"], capture_output=True, text=True)
    check(r.returncode == 1 and "99" in r.stderr, f"bad device: {r.returncode} {r.stderr}")


if __name__ == "__main__":
    run(test_every_kernel_and_type_has_figures, test_filter_and_table, test_int_dot_marked, test_bad_arguments)

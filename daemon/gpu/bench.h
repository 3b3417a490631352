/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * GPU-side timings for `inferctl bench ops`: each records its dispatches
 * between two timestamps in one submission, submits once to warm up and
 * five times to measure (once, if that takes 10 ms or more), and reports
 * the median GPU time (not host time). -EOPNOTSUPP when the device has no
 * timestamps.
 */

#include <stdint.h>

#include "engine.h"
#include "ops-weights.h"
#include "quant.h"

/*
 * Matrix x vector (batch 1) on an n_rows x n_cols matrix of `type` with
 * random weights: n_iter dispatches with barriers between them; returns
 * nanoseconds per call.
 */
int gpu_bench_matvec(GpuDevice *d, GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_iter,
                     double *ret_ns_per_call);

/* The same with n_vectors and explicit kernel parameters (NULL: the defaults), for tuning. */
int gpu_bench_matvec_params(GpuDevice *d, GgmlType type, uint32_t n_rows, uint32_t n_cols, uint32_t n_vectors,
                            uint32_t n_iter, const GpuMatvecParams *params, double *ret_ns_per_call);

/*
 * The pieces of gpu_bench_matvec_params(), for sweeps that time many
 * parameters on one upload: the benchmark's deterministic random weights,
 * and the timing of y = W x on given weights.
 */
int gpu_bench_weights(GpuDevice *d, GgmlType type, uint32_t n_rows, uint32_t n_cols, GpuTensor **ret);
int gpu_bench_matvec_tensor(GpuDevice *d, const GpuTensor *w, uint32_t n_vectors, uint32_t n_iter,
                            const GpuMatvecParams *params, double *ret_ns_per_call);

/* Deterministic data in [-1, 1) from seed, the same on every machine; and a
 * device buffer of n_floats of it. */
void gpu_bench_fill(float *x, size_t n, uint64_t seed);
int gpu_bench_buffer_random(GpuDevice *d, size_t n_floats, uint64_t seed, GpuBuffer **ret);

/*
 * Times a recording whose n_iter repetitions of an op lie between timestamp
 * slots t0 and t1: one warm-up submission, then the median of five (one when
 * a submission takes 10 ms or more, as on CPU devices); ns per repetition.
 * Every benchmark measures this way, so their figures compare.
 */
int gpu_bench_measure(GpuCmd *c, int t0, int t1, uint32_t n_iter, double *ret_ns);

/*
 * Device-memory bandwidth: shaders/copy.comp copying `bytes` (rounded down
 * to 16, at most caps.max_storage_buffer_range) from one buffer to another;
 * read plus written bytes per second.
 */
int gpu_bench_copy_bandwidth(GpuDevice *d, uint64_t bytes, double *ret_bytes_per_sec);

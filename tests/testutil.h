/* testutil.h - helpers shared by the test suites. */
#ifndef DM_TESTUTIL_H
#define DM_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "damamba.h"
#include "kernels.h"
#include "tensor_file.h"

/* Path of a file in the test data folder (tests/golden), from the
 * DM_TEST_DATA environment variable that meson sets. */
const char *test_path(const char *name);

/* The path of a fixture under DM_TEST_FIXTURES (tests/fixtures by default). */
const char *test_fixture_path(const char *name);

/* The bytes of a file in the test data folder (free them), or fail the test. */
unsigned char *test_read(const char *name, size_t *size);
/* The bytes of the file at path (free them), or fail the test. */
unsigned char *test_read_path(const char *path, size_t *size);

/* Open a golden safetensors file or fail the test. */
void test_open(const char *name, dm_tensor_file *file);

/* A tensor of a file as float32, or fail the test. */
const float *test_f32(const dm_tensor_file *file, const char *name, size_t *count);

/* max |got - want| / max |want|, printed with a label for the test log. */
double test_rel_err(const char *label, const float *got, const float *want, size_t n);

/* x rounded to IEEE half (f16) or bfloat16, ties to even, overflowing to
 * infinity, computed with C's double arithmetic: the reference the
 * library's conversions and round_half kernels are checked against. */
double test_f16_round(double x);
double test_bf16_round(double x);

/* An activation in double arithmetic (GELU's erf form): the reference for
 * products and convolutions with an epilogue. */
double test_activate(double x, dm_act act);

/* The CRC-32 of zip and PNG (reflected polynomial 0xEDB88320), bit by
 * bit: a reference independent of zlib's tables. */
uint32_t test_crc32(const void *data, size_t n);

/* Reproducible pseudo-random numbers for sweeps: restart the sequence at
 * seed, then uniform in [lo, hi). */
void test_seed(uint64_t seed);
float test_uniform(float lo, float hi);

/* The golden tolerance: 1e-4 of the largest expected magnitude. */
#define GOLDEN_TOL 1e-4

/* The golden single block (block.safetensors) and a golden model (weights
 * and its .io file: logits and the four stage outputs) on a backend,
 * asserted against their expected outputs within GOLDEN_TOL. */
void test_golden_block(dm_backend backend);
void test_golden_model(const char *weights, const char *io_name, dm_backend backend);
/* The same with the workspace's products in `precision`, within tol. */
void test_golden_model_in(const char *weights, const char *io_name, dm_backend backend, dm_precision precision,
                          double tol);

/* A profiled pass of synthetic DAMamba-F on a backend: the unprofiled
 * pass's logits, every operator the graph runs counted, the products'
 * work as dm_model_macs counts it, the precision setting passed on. */
void test_operator_profile(dm_backend backend);

/* Whether the kernels DAMAMBA_ISA asks for can run; if not, says why, for
 * a suite that then exits 77 (skipped). */
int test_isa_runs(void);

/* 0 when a CUDA device is there to test on; otherwise says so and returns
 * the exit code: 77 (skipped), or a failure when DM_TEST_REQUIRE_CUDA is
 * set (a GPU machine's check). */
int test_cuda_missing(void);

/* run(arg) in a forked child whose address space may grow only `spare`
 * bytes beyond what it holds, so that allocations past that fail; the
 * child's exit status is run's return (a signal fails the test).  Under
 * AddressSanitizer, whose shadow memory such a limit refuses, or where the
 * limit does not hold (qemu-user takes it without applying it), nothing
 * runs: says so and returns -1.  run may not return 124 or 125. */
int test_with_spare_memory(size_t spare, int (*run)(void *arg), void *arg);

/* Run the suite, print a summary, return the process exit code. */
int test_run(Suite *suite);
/* The same without forking a process per test, for suites whose tests use
 * the CUDA runtime: it does not survive a fork once initialized. */
int test_run_in_process(Suite *suite);

#endif

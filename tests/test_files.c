/* test_files.c - inputs must be regular files and never block; outputs
 * replace their file whole or not at all, through an unpredictable
 * temporary name: planted links are never followed, two writers never
 * interleave, and an input is never the output. */
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal_api.h"
#include "tensor_file.h"

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/dm_outfile_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[512];
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void expect_text(const char *path, const char *text)
{
    char buf[256] = {0};
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    ck_assert_uint_eq(n, strlen(text));
    ck_assert_str_eq(buf, text);
}

static int files_in_dir(void)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* One tensor of four bytes, "abcd". */
static dm_status write_safetensors(const char *path)
{
    dm_tensor t = {.name = "t", .dtype = DM_U8, .ndim = 1, .shape = {4}, .numel = 4, .data = "abcd", .nbytes = 4};
    return dm_safetensors_write(path, &t, 1, NULL, 0);
}

START_TEST(planted_links_are_not_followed)
{
    /* A link under the name the writer once used for its temporary file:
     * the file it points to was overwritten. */
    char out[256], link[256], victim[256];
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    snprintf(link, sizeof link, "%s/out.safetensors.tmp", dir);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    write_text(victim, "precious");
    ck_assert_int_eq(symlink(victim, link), 0);
    ck_assert_int_eq(write_safetensors(out), DM_OK);
    expect_text(victim, "precious");
    struct stat sb;
    ck_assert_int_eq(lstat(out, &sb), 0);
    ck_assert(S_ISREG(sb.st_mode));
    dm_tensor_file f;
    ck_assert_int_eq(dm_safetensors_open(out, &f), DM_OK);
    ck_assert_int_eq(memcmp(f.tensors[0].data, "abcd", 4), 0);
    dm_tensor_file_close(&f);
    ck_assert_int_eq(files_in_dir(), 3); /* out, the link, the victim: no temporary file left */
}
END_TEST

START_TEST(concurrent_writers_do_not_interleave)
{
    char out[256];
    snprintf(out, sizeof out, "%s/out.txt", dir);
    dm_outfile a, b;
    ck_assert_int_eq(dm_outfile_open(out, &a), DM_OK);
    ck_assert_int_eq(dm_outfile_open(out, &b), DM_OK);
    ck_assert_str_ne(a.tmp, b.tmp);
    for (int i = 0; i < 3; i++) {
        fputs("AAAA", a.f);
        fflush(a.f);
        fputs("BB", b.f);
        fflush(b.f);
    }
    ck_assert_int_eq(dm_outfile_finish(&a, 1), DM_OK);
    expect_text(out, "AAAAAAAAAAAA");
    ck_assert_int_eq(dm_outfile_finish(&b, 1), DM_OK);
    expect_text(out, "BBBBBB");
    ck_assert_int_eq(files_in_dir(), 1);
}
END_TEST

START_TEST(abandoned_output_leaves_the_old_file)
{
    char out[256];
    snprintf(out, sizeof out, "%s/out.txt", dir);
    write_text(out, "old");
    dm_outfile o;
    ck_assert_int_eq(dm_outfile_open(out, &o), DM_OK);
    fputs("half", o.f);
    ck_assert_int_eq(dm_outfile_finish(&o, 0), DM_OK);
    expect_text(out, "old");
    ck_assert_int_eq(files_in_dir(), 1);
    /* A directory that cannot hold the temporary file: an error naming the output. */
    ck_assert_int_eq(dm_outfile_open("/nonexistent/out.txt", &o), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "/nonexistent/out.txt: cannot create a temporary file"));
}
END_TEST

/* A safetensors header that cannot be built for want of memory fails the
 * write, and leaves no file.  Its memory stream dropped the writes it
 * could not hold without an error, so the file was written with a short or
 * mangled header, or the padding loop, which waited for the position to
 * move, never ended.  The child may grow by 1 MB, and has a header of
 * about 8 MB to build. */
enum { HEADER_TENSORS = 2000, HEADER_NAME = 4000 };

static int write_large_header(void *tensors)
{
    char out[256];
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    dm_status st = dm_safetensors_write(out, tensors, HEADER_TENSORS, NULL, 0);
    return st == DM_ERR_NOMEM && strstr(dm_last_error(), "out of memory writing") ? 0 : st == DM_OK ? 1 : 2;
}

START_TEST(header_out_of_memory_writes_nothing)
{
    dm_tensor *t = calloc(HEADER_TENSORS, sizeof *t);
    static const float zero = 0.0f;
    for (int i = 0; i < HEADER_TENSORS; i++) {
        t[i] = (dm_tensor){.name = malloc(HEADER_NAME + 16), .dtype = DM_F32, .ndim = 1, .shape = {1}, .numel = 1,
                           .data = &zero, .nbytes = 4};
        memset(t[i].name, 'a', HEADER_NAME);
        snprintf(t[i].name + HEADER_NAME, 16, "%d", i);
    }
    int got = test_with_spare_memory(1 << 20, write_large_header, t);
    ck_assert_msg(got <= 0, "the write under a memory limit %s", got == 1 ? "succeeded" : "failed otherwise");
    ck_assert_int_eq(files_in_dir(), 0);
    for (int i = 0; i < HEADER_TENSORS; i++) free(t[i].name);
    free(t);
}
END_TEST

START_TEST(input_is_never_the_output)
{
    char in[256], hard[256], other[256];
    snprintf(in, sizeof in, "%s/in.safetensors", dir);
    snprintf(hard, sizeof hard, "%s/hard.safetensors", dir);
    snprintf(other, sizeof other, "%s/new.safetensors", dir);
    write_text(in, "input");
    ck_assert_int_eq(link(in, hard), 0);
    const char *inputs[] = {NULL, in};
    ck_assert_int_eq(dm_output_distinct(hard, inputs, 2), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "the output is the input file"));
    ck_assert_int_eq(dm_output_distinct(in, inputs, 2), DM_ERR_ARGUMENT);
    ck_assert_int_eq(dm_output_distinct(other, inputs, 2), DM_OK);
}
END_TEST

START_TEST(fifos_are_refused_without_blocking)
{
    /* Opening a FIFO for reading waited for a writer forever (the test
     * timeout catches that). */
    char fifo[256];
    snprintf(fifo, sizeof fifo, "%s/pipe.png", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    dm_image img;
    ck_assert_int_eq(dm_image_load(fifo, 3, &img), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "pipe.png: not a regular file"));
    dm_model *m;
    ck_assert_int_eq(dm_model_load(fifo, NULL, &m), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "pipe.png: not a regular file"));
    dm_tensor_file f;
    ck_assert_int_eq(dm_safetensors_open(fifo, &f), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "pipe.png: not a regular file"));
    ck_assert_int_eq(dm_image_load(dir, 3, &img), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "is a directory"));
}
END_TEST

/* A file name of 255 bytes, the most Linux takes, is a legal output: the
 * temporary name beside it is cut short (the suffix took it past 255 and
 * the output could not be written). */
START_TEST(longest_names_are_written)
{
    char out[512];
    int n = snprintf(out, sizeof out, "%s/", dir);
    memset(out + n, 'a', 255);
    out[n + 255] = 0;
    write_text(out, "old");
    dm_outfile o;
    ck_assert_msg(dm_outfile_open(out, &o) == DM_OK, "%s", dm_last_error());
    fputs("new", o.f);
    ck_assert_int_eq(dm_outfile_finish(&o, 1), DM_OK);
    expect_text(out, "new");
    ck_assert_int_eq(files_in_dir(), 1);
}
END_TEST

START_TEST(pipes_and_devices_are_written_in_place)
{
    /* Renaming over them replaced the pipe (or, run as root with -o
     * /dev/null, the device node) with a regular file. */
    char fifo[256];
    snprintf(fifo, sizeof fifo, "%s/pipe", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    dm_outfile o;
    /* nobody reads it: refused, not waited for */
    ck_assert_int_eq(dm_outfile_open(fifo, &o), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "pipe: a named pipe that no process reads"));
    int reader = open(fifo, O_RDONLY | O_NONBLOCK);
    ck_assert_int_ge(reader, 0);
    ck_assert_int_eq(dm_outfile_open(fifo, &o), DM_OK);
    fputs("through the pipe", o.f);
    ck_assert_int_eq(dm_outfile_finish(&o, 1), DM_OK);
    char buf[64] = {0};
    ck_assert_int_eq(read(reader, buf, sizeof buf - 1), (ssize_t)strlen("through the pipe"));
    ck_assert_str_eq(buf, "through the pipe");
    close(reader);
    struct stat sb;
    ck_assert_int_eq(lstat(fifo, &sb), 0);
    ck_assert(S_ISFIFO(sb.st_mode));
    ck_assert_int_eq(files_in_dir(), 1); /* no temporary file beside it */
}
END_TEST

START_TEST(links_name_the_file_they_replace)
{
    /* The link itself was replaced by a regular file, and the file it
     * names kept its old content. */
    char target[256], link[256], dangling[256];
    snprintf(target, sizeof target, "%s/target", dir);
    snprintf(link, sizeof link, "%s/link", dir);
    snprintf(dangling, sizeof dangling, "%s/dangling", dir);
    write_text(target, "old");
    ck_assert_int_eq(symlink("target", link), 0);
    dm_outfile o;
    ck_assert_int_eq(dm_outfile_open(link, &o), DM_OK);
    fputs("new", o.f);
    ck_assert_int_eq(dm_outfile_finish(&o, 1), DM_OK);
    struct stat sb;
    ck_assert_int_eq(lstat(link, &sb), 0);
    ck_assert(S_ISLNK(sb.st_mode));
    expect_text(target, "new");
    /* a link to nothing: refused, left as it was */
    ck_assert_int_eq(symlink("missing", dangling), 0);
    ck_assert_int_eq(dm_outfile_open(dangling, &o), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "dangling: a symbolic link to nothing"));
    ck_assert_int_eq(lstat(dangling, &sb), 0);
    ck_assert(S_ISLNK(sb.st_mode));
    ck_assert_int_eq(files_in_dir(), 3); /* no temporary file left */
}
END_TEST

START_TEST(own_descriptors_are_written_through)
{
    /* /dev/fd/N and /proc/self/fd/N went through /proc's links to the
     * file, whose replacement lost what the descriptor had appended. */
    char log[256], name[64];
    snprintf(log, sizeof log, "%s/log", dir);
    write_text(log, "start;");
    int fd = open(log, O_WRONLY | O_APPEND);
    ck_assert_int_ge(fd, 0);
    const char *forms[] = {"/dev/fd/%d", "/proc/self/fd/%d"};
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, forms[i], fd);
        dm_outfile o;
        ck_assert_msg(dm_outfile_open(name, &o) == DM_OK, "%s", dm_last_error());
        fputs(i ? "two;" : "one;", o.f);
        ck_assert_int_eq(dm_outfile_finish(&o, 1), DM_OK);
    }
    ck_assert_int_eq(write(fd, "own", 3), 3); /* the caller's descriptor stays open */
    close(fd);
    expect_text(log, "start;one;two;own");
    ck_assert_int_eq(files_in_dir(), 1);
    dm_outfile o;
    ck_assert_int_eq(dm_outfile_open("/dev/fd/987654", &o), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "/dev/fd/987654: cannot write to it: Bad file descriptor"));
}
END_TEST

START_TEST(write_errors_keep_their_cause)
{
    /* A write that failed before the close was reported as an
     * input/output error, not as the full disk it was. */
    dm_outfile o;
    ck_assert_int_eq(dm_outfile_open("/dev/full", &o), DM_OK);
    static char block[1 << 16];
    for (int i = 0; i < 16; i++) fwrite(block, 1, sizeof block, o.f);
    ck_assert_int_eq(dm_outfile_finish(&o, 1), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "/dev/full: write failed: No space left on device"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("outfile");
    TCase *tc = tcase_create("outfile");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_add_test(tc, planted_links_are_not_followed);
    tcase_add_test(tc, concurrent_writers_do_not_interleave);
    tcase_add_test(tc, abandoned_output_leaves_the_old_file);
    tcase_add_test(tc, input_is_never_the_output);
    tcase_add_test(tc, fifos_are_refused_without_blocking);
    tcase_add_test(tc, pipes_and_devices_are_written_in_place);
    tcase_add_test(tc, longest_names_are_written);
    tcase_add_test(tc, header_out_of_memory_writes_nothing);
    tcase_add_test(tc, links_name_the_file_they_replace);
    tcase_add_test(tc, own_descriptors_are_written_through);
    tcase_add_test(tc, write_errors_keep_their_cause);
    suite_add_tcase(s, tc);
    return test_run(s);
}

/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz/run-corpus: replay a saved corpus through a target. */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

/*
 * Usage: fuzz-<name> DIR|FILE...  Every regular file of each directory
 * (sorted, so failures are reproducible) and every named file goes once
 * through LLVMFuzzerTestOneInput; a broken invariant aborts. An empty or
 * missing corpus fails: a corpus test that runs nothing cannot fail.
 */

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	long len;
	int ret = -1;

	if (f == NULL)
		goto out_err;
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0)
		goto out_close;
	/* One spare byte: malloc(0) may return NULL. */
	data = malloc((size_t)len + 1);
	if (data == NULL || fread(data, 1, (size_t)len, f) != (size_t)len)
		goto out_close;
	/* A copy of exactly len bytes, so ASan sees reads past the end. */
	ret = LLVMFuzzerTestOneInput(data, (size_t)len);
out_close:
	free(data);
	if (fclose(f) != 0)
		ret = -1;
out_err:
	if (ret < 0)
		(void)fprintf(stderr, "%s: %s\n", path, strerror(errno));
	return ret < 0 ? -1 : 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Returns the files run, or -1. */
static long run_dir(const char *dir)
{
	struct dirent *de;
	char **names = NULL, path[4096];
	size_t n = 0, cap = 0;
	long ran = 0;
	DIR *d = opendir(dir);

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		char *name;

		if (de->d_name[0] == '.')
			continue;
		name = strdup(de->d_name);
		if (name == NULL)
			abort();
		if (n == cap) {
			char **p;

			cap = cap ? cap * 2 : 64;
			p = realloc(names, cap * sizeof(*names));
			if (p == NULL)
				abort();
			names = p;
		}
		names[n++] = name;
	}
	(void)closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		struct stat st;

		(void)snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (run_file(path) < 0)
				ran = -1;
			else if (ran >= 0)
				ran++;
		}
		free(names[i]);
	}
	free(names);
	return ran;
}

int main(int argc, char **argv)
{
	long total = 0;

	if (argc < 2) {
		(void)fprintf(stderr, "usage: %s CORPUS-DIR|FILE...\n",
			      argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;
		long ran;

		if (stat(argv[i], &st) != 0) {
			(void)fprintf(stderr, "%s: %s\n", argv[i],
				      strerror(errno));
			return 1;
		}
		ran = S_ISDIR(st.st_mode) ? run_dir(argv[i])
					  : (run_file(argv[i]) < 0 ? -1 : 1);
		if (ran < 0)
			return 1;
		(void)printf("%s: %ld inputs\n", argv[i], ran);
		total += ran;
	}
	if (total == 0) {
		(void)fprintf(stderr,
			      "no inputs: an empty corpus tests nothing\n");
		return 1;
	}
	return 0;
}

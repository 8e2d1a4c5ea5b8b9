/*
 * secret.c — key material held only in C memory.
 *
 * Reads secrets from the environment or from owner-only files, keeps them in
 * pages excluded from core dumps, compares in constant time, and zeroes them on
 * release. Error messages name where a secret comes from, never its value.
 */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET_MAX 65536

static void fingerprint(struct secret *s)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	static const char hex[] = "0123456789abcdef";

	s->fingerprint[0] = '\0';
	if (!EVP_Digest(s->data, s->len, md, &mdlen, EVP_sha256(), NULL) || mdlen < 8)
		return;
	for (int i = 0; i < 8; i++) {
		s->fingerprint[2 * i] = hex[md[i] >> 4];
		s->fingerprint[2 * i + 1] = hex[md[i] & 15];
	}
	s->fingerprint[16] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
}

int secret_set(struct secret *s, const void *data, size_t len)
{
	secret_clear(s);
	if (len == 0 || len > SECRET_MAX)
		return -1;
	s->data = malloc(len + 1);
	if (!s->data)
		return -1;
	/* Best effort, beside the process being non-dumpable: keep every page the
	 * key touches out of core dumps (rounded out to whole pages). */
	{
		uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
		uintptr_t start = (uintptr_t)s->data & ~(page - 1);
		uintptr_t end = ((uintptr_t)s->data + len + 1 + page - 1) & ~(page - 1);
		(void)madvise((void *)start, end - start, MADV_DONTDUMP);
	}
	memcpy(s->data, data, len);
	s->data[len] = '\0';
	s->len = len;
	fingerprint(s);
	return 0;
}

void secret_clear(struct secret *s)
{
	if (s->data) {
		OPENSSL_cleanse(s->data, s->len + 1);
		free(s->data);
	}
	s->data = NULL;
	s->len = 0;
	s->fingerprint[0] = '\0';
}

bool secret_equals(const struct secret *s, const void *candidate, size_t len)
{
	unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
	unsigned int alen = 0, blen = 0;
	bool eq;

	if (!s->data || !candidate)
		return false;
	/* Compare digests so the time taken does not depend on the lengths either. */
	if (!EVP_Digest(s->data, s->len, a, &alen, EVP_sha256(), NULL) ||
	    !EVP_Digest(candidate, len, b, &blen, EVP_sha256(), NULL) || alen != blen)
		return false;
	eq = CRYPTO_memcmp(a, b, alen) == 0;
	OPENSSL_cleanse(a, sizeof(a));
	OPENSSL_cleanse(b, sizeof(b));
	return eq;
}

static int load_file(const char *path, struct secret *out, char *err, size_t errlen)
{
	unsigned char buf[SECRET_MAX + 1];
	struct stat st;
	ssize_t n;
	size_t len = 0;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(err, errlen, "secret file %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "secret file %s: not a regular file", path);
		goto out;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen, "secret file %s: readable by group or others (chmod 600 it)", path);
		goto out;
	}
	while (len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) { /* a truncated key must never load */
			snprintf(err, errlen, "secret file %s: %s", path, strerror(errno));
			goto out;
		}
		len += (size_t)n;
	}
	if (len > SECRET_MAX) {
		snprintf(err, errlen, "secret file %s: larger than %d bytes", path, SECRET_MAX);
		goto out;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (len == 0) {
		snprintf(err, errlen, "secret file %s: empty", path);
		goto out;
	}
	if (secret_set(out, buf, len) != 0) {
		snprintf(err, errlen, "secret file %s: out of memory", path);
		goto out;
	}
	rc = 0;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return rc;
}

int secret_load(const struct secret_ref *ref, struct secret *out, char *err, size_t errlen)
{
	if (ref->file)
		return load_file(ref->file, out, err, errlen);
	if (ref->env) {
		const char *v = getenv(ref->env);
		if (!v || !*v) {
			snprintf(err, errlen, "environment variable %s is not set or empty", ref->env);
			return -1;
		}
		if (secret_set(out, v, strlen(v)) != 0) {
			snprintf(err, errlen, "environment variable %s: too long", ref->env);
			return -1;
		}
		return 0;
	}
	snprintf(err, errlen, "secret has neither env nor file");
	return -1;
}

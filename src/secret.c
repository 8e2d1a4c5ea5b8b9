/*
 * secret.c — key material held only in C memory.
 *
 * Reads secrets from the environment or from owner-only files, keeps them in
 * pages excluded from core dumps, compares in constant time, and zeroes them on
 * release. Error messages name where a secret comes from, never its value.
 */
#include "secret.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET_MAX 65536

/* SHA-256, fetched once (EVP_sha256() inside EVP_Digest looks it up on
 * every call), and each thread's digest context, reused (EVP_Digest
 * allocates and frees one per call); freed when the thread ends. */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256;
static pthread_key_t ctx_key;
static bool ctx_key_ok;
static _Thread_local EVP_MD_CTX *thread_ctx;

static void free_ctx(void *ctx)
{
	EVP_MD_CTX_free(ctx);
}

static void fetch_sha256(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	ctx_key_ok = pthread_key_create(&ctx_key, free_ctx) == 0;
}

bool secret_sha256(const void *data, size_t len, unsigned char md[SECRET_DIGEST_LEN])
{
	const EVP_MD *alg;
	unsigned int mdlen = 0;
	int ok;

	pthread_once(&sha256_once, fetch_sha256);
	alg = sha256 ? sha256 : EVP_sha256();
	if (!thread_ctx && ctx_key_ok) {
		thread_ctx = EVP_MD_CTX_new();
		if (thread_ctx && pthread_setspecific(ctx_key, thread_ctx) != 0) {
			EVP_MD_CTX_free(thread_ctx);
			thread_ctx = NULL;
		}
	}
	if (thread_ctx)
		ok = EVP_DigestInit_ex2(thread_ctx, alg, NULL) && EVP_DigestUpdate(thread_ctx, data, len) &&
		     EVP_DigestFinal_ex(thread_ctx, md, &mdlen);
	else
		ok = EVP_Digest(data, len, md, &mdlen, alg, NULL);
	return ok && mdlen == SECRET_DIGEST_LEN;
}

bool secret_in_url(const char *url)
{
	const char *sep = strstr(url, "://");
	const char *host = sep ? sep + 3 : url;

	return memchr(host, '@', strcspn(host, "/?#")) != NULL;
}

/*
 * The host must be exactly localhost, 127.x.y.z or [::1] — not a name that
 * merely starts like one ("127.0.0.1.example.com"), and no userinfo.
 */
bool secret_url_transport_ok(const char *url)
{
	char host[64];
	const char *h, *end;
	struct in_addr a4;
	size_t n;

	if (strncmp(url, "https://", 8) == 0)
		return url[8] != '\0' && url[8] != '/';
	if (strncmp(url, "http://", 7) != 0)
		return false;
	h = url + 7;
	end = h + strcspn(h, "/?#");
	if (memchr(h, '@', (size_t)(end - h)))
		return false;
	if (*h == '[') {
		const char *close = memchr(h, ']', (size_t)(end - h));
		if (!close)
			return false;
		n = (size_t)(close - h - 1);
		if (n != 3 || memcmp(h + 1, "::1", 3) != 0)
			return false;
		return close[1] == ':' || close + 1 == end;
	}
	n = strcspn(h, ":/?#");
	if (n == 0 || n >= sizeof(host))
		return false;
	memcpy(host, h, n);
	host[n] = '\0';
	if (strcmp(host, "localhost") == 0)
		return true;
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

void secret_hex(const unsigned char *md, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[2 * n] = '\0';
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
	/* The digest secret_matches compares with, and its start as the fingerprint. */
	if (!secret_sha256(s->data, s->len, s->digest)) {
		secret_clear(s);
		return -1;
	}
	secret_hex(s->digest, 8, s->fingerprint);
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
	OPENSSL_cleanse(s->digest, sizeof(s->digest));
}

bool secret_candidate_digest(const void *candidate, size_t len, unsigned char md[SECRET_DIGEST_LEN])
{
	/* No secret is longer: such a candidate matches none, and is not hashed. */
	return candidate && len <= SECRET_MAX && secret_sha256(candidate, len, md);
}

bool secret_matches(const struct secret *s, const unsigned char md[SECRET_DIGEST_LEN])
{
	/* Digests are compared, so the time taken does not depend on the lengths either. */
	return s->data && CRYPTO_memcmp(s->digest, md, SECRET_DIGEST_LEN) == 0;
}

bool secret_equals(const struct secret *s, const void *candidate, size_t len)
{
	unsigned char md[SECRET_DIGEST_LEN];
	bool eq = secret_candidate_digest(candidate, len, md) && secret_matches(s, md);

	OPENSSL_cleanse(md, sizeof(md));
	return eq;
}

/* The file a secret path names, as platforms mount them: Kubernetes
 * projects each key as a symlink to ..data/KEY, ..data being a symlink to a
 * timestamped folder swapped on update; systemd credentials are plain files.
 * So symlinks are followed (realpath) and the rules hold for the final file:
 * a regular file, nothing for group or others, owned by this process's user
 * or root (anyone else could rewrite the key). Returns an open fd, or -1. */
static int open_secret(const char *path, char *err, size_t errlen)
{
	char real[PATH_MAX], shown[PATH_MAX + 8];
	struct stat st;
	int fd;

	if (!realpath(path, real)) {
		snprintf(err, errlen, "secret file %s: %s", path, strerror(errno));
		return -1;
	}
	if (strcmp(real, path) != 0)
		snprintf(shown, sizeof(shown), " (-> %s)", real);
	else
		shown[0] = '\0';
	/* O_NOFOLLOW: resolved once, so a link swapped in since is refused.
	 * O_NONBLOCK: a FIFO must not hold the open (it is refused just below). */
	fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		snprintf(err, errlen, "secret file %s%s: %s", path, shown, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "secret file %s%s: not a regular file", path, shown);
		goto fail;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen,
		         "secret file %s%s: mode %03o is readable by group or others (chmod 600 it, or 400)",
		         path, shown, (unsigned)(st.st_mode & 0777));
		goto fail;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		snprintf(err, errlen,
		         "secret file %s%s: owned by uid %lu, not by this user (uid %lu) or root", path,
		         shown, (unsigned long)st.st_uid, (unsigned long)geteuid());
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

static int load_file(const char *path, struct secret *out, char *err, size_t errlen)
{
	unsigned char buf[SECRET_MAX + 1];
	ssize_t n;
	size_t len = 0;
	int fd, rc = -1;

	fd = open_secret(path, err, errlen);
	if (fd < 0)
		return -1;
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

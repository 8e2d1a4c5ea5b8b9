/*
 * config/cluster.c — the converters of the `cluster` block.
 *
 * Owns the checks and stores of cluster.redis.url, cluster.redis.ca_file,
 * cluster.redis.cert and .key, cluster.redis.password, cluster.name and
 * cluster.cache_key (struct cluster_conf), and building rediss://'s TLS
 * context at load (the client certificate joins it in resolve.c). It must never
 * echo a password (a URL holding an '@' is never quoted), never give a way
 * to turn TLS verification off, never accept a ca_file it cannot read (or
 * one beside a redis:// URL, which would travel in clear), and never touch
 * Redis.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "fileio.h"
#include "loader.h"
#include "redisio.h"
#include "secret.h"
#include "trust.h"

/* ------------------------------------------------------------------------ */
/* cluster                                                                  */
/* ------------------------------------------------------------------------ */

/* The port or database number of n digits at s (n > 0), at most max; -1 when not. */
static long digits_value(const char *s, size_t n, long max)
{
	long v = 0;

	if (n == 0 || n > 10)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= max ? v : -1;
}

/*
 * redis[s]://[user@]host[:port][/db]: the host a name, an IPv4 address or
 * an [IPv6] address; port 6379 and database 0 by default. A password is a
 * secret and never sits in a URL (cluster.redis.password). rediss:// is
 * TLS (redisio.c: OpenSSL, as hiredis 0.14 has none), its context built by
 * the ca_file row that follows.
 */
int config_conv_cluster_url(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct cluster_conf *c = &((struct config *)base)->cluster;
	const char *s = v->str, *auth, *end, *at, *host, *hend, *port = NULL;
	/* What a message may quote: never a URL with an '@' (what stands before
	 * it may be a password, whatever the rest of the URL looks like). */
	const char *shown = strchr(s, '@') ? "(not quoted: it holds an '@')" : s;
	size_t hostlen;
	long n;

	if (strlen(s) != v->len)
		return config_fail(ld, key, "must not contain a NUL byte");
	for (size_t i = 0; i < v->len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return config_fail(ld, key, "must not contain spaces, control or non-ASCII bytes");
	c->tls = strncmp(s, "rediss://", 9) == 0;
	if (!c->tls && strncmp(s, "redis://", 8) != 0)
		return config_fail(ld, key,
		                   "\"%s\" must start with redis:// or rediss:// (TLS) "
		                   "(redis://[user@]host[:port][/db])",
		                   shown);
	auth = s + (c->tls ? 9 : 8);
	if (strpbrk(auth, "?#%"))
		return config_fail(
		    ld, key, "\"%s\": no query, fragment or %%-escape (redis://[user@]host[:port][/db])",
		    shown);
	end = auth + strcspn(auth, "/");
	at = memchr(auth, '@', (size_t)(end - auth));
	if (at && (memchr(auth, ':', (size_t)(at - auth)) || memchr(at + 1, '@', (size_t)(end - at - 1))))
		/* Never echo it: the text before '@' may be a password. */
		return config_fail(ld, key,
		                   "must not carry a password: write redis://user@host and give the password "
		                   "as cluster.redis.password = { env = \"NAME\" } or { file = \"PATH\" }");
	if (at == auth)
		return config_fail(ld, key, "has an empty user name before '@'");
	host = at ? at + 1 : auth;
	if (host < end && *host == '[') {
		const char *close = memchr(host, ']', (size_t)(end - host));
		unsigned char addr[sizeof(struct in6_addr)];
		char buf[INET6_ADDRSTRLEN];
		if (!close || (size_t)(close - host - 1) >= sizeof(buf))
			goto bad;
		memcpy(buf, host + 1, (size_t)(close - host - 1));
		buf[close - host - 1] = '\0';
		if (inet_pton(AF_INET6, buf, addr) != 1)
			goto bad;
		hend = close + 1;
		host++;
		hostlen = (size_t)(close - host);
		if (hend < end && *hend != ':')
			goto bad;
	} else {
		hend = host + strcspn(host, ":/");
		hostlen = (size_t)(hend - host);
		for (size_t i = 0; i < hostlen; i++)
			if (!strchr("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_",
			            host[i]))
				goto bad;
	}
	if (hostlen == 0 || hostlen > 253)
		goto bad;
	if (hend < end) {
		port = hend + 1;
		if ((n = digits_value(port, (size_t)(end - port), 65535)) < 1)
			return config_fail(ld, key, "\"%s\": the port must be 1..65535", shown);
		c->port = (unsigned short)n;
	} else {
		c->port = 6379;
	}
	c->db = 0;
	if (*end == '/' && end[1]) {
		if ((n = digits_value(end + 1, strlen(end + 1), 65535)) < 0)
			return config_fail(ld, key,
			                   "\"%s\": the database after '/' must be a number 0..65535", shown);
		c->db = (unsigned)n;
	}
	free(c->host);
	free(c->user);
	c->user = NULL;
	c->host = strndup(host, hostlen);
	if (!c->host || (at && !(c->user = strndup(auth, (size_t)(at - auth)))))
		return config_fail(ld, key, "out of memory");
	return 0;
bad:
	return config_fail(
	    ld, key, "\"%s\" is not redis://[user@]host[:port][/db] (such as \"redis://10.0.0.5:6379/0\")",
	    shown);
}

/* The largest ca_file whose content is compared across reloads. */
#define CA_FILE_MAX (64 * 1024 * 1024)

/* The SHA-256 of path's content as hex into out (65 bytes): a file changed
 * in place is a change of cluster (reload.c). 0, or -1 and err. */
static int file_digest(const char *path, char *out, char *err, size_t errlen)
{
	unsigned char md[SECRET_DIGEST_LEN];
	char why[256], *text = NULL;
	size_t len = 0;
	bool ok;

	if (fileio_read(path, CA_FILE_MAX, 0, &text, &len, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "%s: %s", path, why);
		return -1;
	}
	ok = secret_sha256(text, len, md);
	free(text);
	if (!ok) {
		snprintf(err, errlen, "cannot hash %s", path);
		return -1;
	}
	secret_hex(md, sizeof(md), out);
	return 0;
}

/* After the URL's row: with rediss://, the trust anchors (the system's,
 * and ca_file's added to them, read now: a bad file fails the load, not
 * the first connection) and the TLS context every connection uses. */
int config_conv_cluster_ca_file(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct cluster_conf *c = &((struct config *)base)->cluster;
	struct x509_store_st *store;
	char err[512];

	if (v->present && !c->tls)
		return config_fail(ld, key, "only with a rediss:// url (TLS): redis:// travels in clear");
	if (!c->tls)
		return 0;
	free(c->ca_file);
	c->ca_file = NULL;
	if (v->present && !(c->ca_file = fileio_join(ld->cfg->dir, v->str)))
		return config_fail(ld, key, "out of memory");
	if (!(store = trust_load(c->ca_file, err, sizeof(err))))
		return config_fail(ld, v->present ? key : "cluster.redis.url", "%s", err);
	if (c->ca_file && file_digest(c->ca_file, c->ca_digest, err, sizeof(err)) != 0) {
		trust_free(store);
		return config_fail(ld, key, "%s", err);
	}
	redisio_tls_free(c->tls_ctx);
	c->tls_ctx = redisio_tls_new(store, err, sizeof(err));
	trust_free(store);
	if (!c->tls_ctx)
		return config_fail(ld, key, "%s", err);
	return 0;
}

/* After ca_file's row (the context exists): the client certificate's path,
 * read with the key once the secrets are loaded (resolve.c). */
int config_conv_cluster_cert(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct cluster_conf *c = &((struct config *)base)->cluster;

	if (!v->present)
		return 0;
	if (!c->tls)
		return config_fail(ld, key, "only with a rediss:// url (TLS)");
	free(c->cert_path);
	if (!(c->cert_path = fileio_join(ld->cfg->dir, v->str)))
		return config_fail(ld, key, "out of memory");
	return 0;
}

/* After the cert's row: one without the other is refused. */
int config_conv_cluster_key(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct cluster_conf *c = &((struct config *)base)->cluster;
	char *path;

	if (!v->present)
		return c->cert_path ? config_fail(ld, key, "is required with cluster.redis.cert") : 0;
	if (!c->tls)
		return config_fail(ld, key, "only with a rediss:// url (TLS)");
	if (!c->cert_path)
		return config_fail(ld, "cluster.redis.cert", "is required with cluster.redis.key");
	if (config_defer_secret(ld, key, &v->ref, &c->key) != 0)
		return -1;
	if (!(path = strdup(c->cert_path)))
		return config_fail(ld, key, "out of memory");
	return config_defer_file(ld, PENDING_REDIS_TLS, "cluster.redis", NULL, path);
}

/* After the URL's row: an ACL user without a password could not log in. */
int config_conv_cluster_password(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct cluster_conf *c = &((struct config *)base)->cluster;

	if (!v->present)
		return c->user ? config_fail(ld, key, "is required when cluster.redis.url names a user") : 0;
	return config_defer_secret(ld, key, &v->ref, &c->password);
}

/* The name is part of every key the cluster writes: ':' separates them. */
int config_conv_cluster_name(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct cluster_conf *c = &((struct config *)base)->cluster;

	if (v->len == 0 || v->len > 64 || strlen(v->str) != v->len)
		goto bad;
	for (size_t i = 0; i < v->len; i++)
		if (!strchr("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.-", v->str[i]))
			goto bad;
	if (!(c->name = strndup(v->str, v->len)))
		return config_fail(ld, key, "out of memory");
	return 0;
bad:
	return config_fail(ld, key, "must be 1..64 of A-Z a-z 0-9 _ . - (it prefixes every Redis key)");
}

/* Loaded with the other secrets; PENDING_CACHE_KEY then checks its form. */
int config_conv_cluster_cache_key(struct loader *ld, const char *key, struct value *v, void *base)
{
	struct cluster_conf *c = &((struct config *)base)->cluster;

	if (!v->present)
		return 0;
	if (config_defer_secret(ld, key, &v->ref, &c->cache_key) != 0)
		return -1;
	return config_defer_file(ld, PENDING_CACHE_KEY, key, NULL, NULL);
}

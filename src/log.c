/*
 * log.c — one JSON line per event on stderr.
 *
 * Owns the format of log lines. System lines are encoded on a private Lua
 * state behind a mutex (they are rare); request lines are encoded by the
 * caller's state. Each line is written with a single write(2) so lines from
 * different threads never interleave. Never logs a secret or a token.
 */
#include "log.h"

#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

static pthread_mutex_t sys_lock = PTHREAD_MUTEX_INITIALIZER;
static lua_State *sys_L;

void log_timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char base[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03ldZ", base, ts.tv_nsec / 1000000);
}

static void write_line(const char *s, size_t len)
{
	struct iovec iov[2] = {{(void *)s, len}, {"\n", 1}};
	ssize_t n = writev(STDERR_FILENO, iov, 2);
	(void)n;
}

void log_table(lua_State *L, int idx)
{
	size_t len;
	const char *s = json_encode(L, idx, &len);

	if (s) {
		write_line(s, len);
		lua_pop(L, 1);
	}
}

void log_msg(const char *level, const char *fmt, ...)
{
	char msg[2048], ts[40];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_timestamp(ts, sizeof(ts));

	pthread_mutex_lock(&sys_lock);
	if (!sys_L) {
		sys_L = luaL_newstate();
		if (sys_L && json_open(sys_L) != 0) {
			lua_close(sys_L);
			sys_L = NULL;
		}
	}
	if (sys_L) {
		lua_createtable(sys_L, 0, 3);
		lua_pushstring(sys_L, ts);
		lua_setfield(sys_L, -2, "time");
		lua_pushstring(sys_L, level);
		lua_setfield(sys_L, -2, "level");
		lua_pushstring(sys_L, msg);
		lua_setfield(sys_L, -2, "msg");
		log_table(sys_L, -1);
		lua_settop(sys_L, 0);
	} else {
		write_line(msg, strlen(msg));
	}
	pthread_mutex_unlock(&sys_lock);
}

/* SHA-256 fetched once: EVP_sha256() inside EVP_Digest looks it up on every call. */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256;

static void fetch_sha256(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void log_token_hash(const char *token, size_t len, char out[13])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	static const char hex[] = "0123456789abcdef";

	out[0] = '\0';
	pthread_once(&sha256_once, fetch_sha256);
	if (!EVP_Digest(token, len, md, &mdlen, sha256 ? sha256 : EVP_sha256(), NULL) || mdlen < 6)
		return;
	for (int i = 0; i < 6; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[12] = '\0';
}

/*
 * fuzz_config.c — libFuzzer driver for config_load (src/config.c): the
 * input is the text of the configuration file.
 *
 * The first input makes a scratch folder (/dev/shm/fuzz_config.PID)
 * holding what a configuration may name: policies and a module, a data file,
 * secret files (one readable by others, to be refused), PEM public keys, a
 * JWKS file, and a client certificate with its key (cluster.redis.cert; and
 * both in one file, to be refused); and sets the environment variables a secret may name. Each
 * input is written there as broker.conf.lua and loaded, as `check` does; a
 * configuration that loads is freed, after its policies were compiled into
 * an engine (with the policy budgets made small, whatever the file asked).
 * No network: libcurl's curl_easy_perform is replaced here by one that
 * fails at once, so a JWKS URL's first fetch fails without leaving the host.
 *
 * Owns the properties (issue 10): whatever the text, loading never crashes
 * and never leaks (LeakSanitizer); a load never runs longer than twice the
 * configuration sandbox's time budget, nor an engine build longer than twice
 * its policies' budget; a refusal says why; and no error message holds the
 * value of a secret the file did not itself contain. A breach aborts with a
 * message naming it, so libFuzzer records the input. Nothing is filtered.
 *
 * The configuration file runs in the policies' sandbox with its own budget
 * (config.c's CONFIG_TIMEOUT_MS: 1 s of CPU, a tenth of it in fuzz builds,
 * which the Makefile marks with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, as
 * are its instruction and memory budgets): CONFIG_BUDGET_MS is that figure.
 * A load may take twice that, plus CONFIG_WALK_MS for its C side (files,
 * keys, the walk) under ASan, in user CPU time (fuzz_clock.h); a hang is
 * libFuzzer's -timeout.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_clock.h"
#include "policy.h"

#ifndef CONFIG_BUDGET_MS
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define CONFIG_BUDGET_MS 100 /* config.c's budgets are a tenth in fuzz builds */
#else
#define CONFIG_BUDGET_MS 1000
#endif
#endif
/* What the C side of a load (files, keys, the walk) may add under ASan. */
#ifndef CONFIG_WALK_MS
#define CONFIG_WALK_MS 200
#endif
#define POLICY_INSTRUCTIONS 200000
#define POLICY_MEMORY_BYTES (4 << 20)
#define POLICY_TIMEOUT_MS   20

/* Secrets, and where the configuration may find them. Hex, like a real key:
 * a lexer that quotes a file it cannot parse quotes them whole. */
static const char *const SECRETS[][2] = {
    {"COURIER_API_KEY", "5ec7e7c0ffee0123456789abcdef4a4e"},
    {"APP_JWT_SECRET", "5ec7e7ba5eba11deadbeef0123456789"},
    {"CLIENT_KEY", "5ec7e7c1ae47001122334455667788aa"},
    {"OTHER_KEY", "5ec7e7077e4aabbccddeeff001122334"},
};
#define FILE_SECRET "9f3b2c7d41e0a8b6c5d4e3f2a1b0c9d8"

static const char ED25519_PEM[] = "-----BEGIN PUBLIC KEY-----\n"
                                  "MCowBQYDK2VwAyEAxfT5stxpeONZrREWeWmMZYRCy45xf/ogbe0pFSj7EbI=\n"
                                  "-----END PUBLIC KEY-----\n";
static const char P256_PEM[] = "-----BEGIN PUBLIC KEY-----\n"
                               "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjE4xoI5HA6w1+xcIFniqZ9iwu68F\n"
                               "7LvZa0kXgPmxTW8JR9KhEC6jONHmY+QNtIplRS2zO4MxpIVrqhzKX20b6w==\n"
                               "-----END PUBLIC KEY-----\n";
/* A client certificate (self-signed, for a century) and its key, for
 * cluster.redis.cert/.key and ca_file; the key is a secret like the others. */
#define CLIENT_CERT                                                                                          \
	"-----BEGIN CERTIFICATE-----\n"                                                                      \
	"MIIBlTCCATygAwIBAgIUIVU1pS2IKJ3qWQlVEAWb7p0CUnAwCgYIKoZIzj0EAwIw\n"                                 \
	"FjEUMBIGA1UEAwwLZnV6ei1jbGllbnQwIBcNMjYxMjA2MDQxNjIyWhgPMjEyNjEx\n"                                 \
	"MTIwNDE2MjJaMBYxFDASBgNVBAMMC2Z1enotY2xpZW50MFkwEwYHKoZIzj0CAQYI\n"                                 \
	"KoZIzj0DAQcDQgAEQ1GZ04L5dgLIhioXah+3tw1Y0Z6tHyXuIvLp3CPgaiSkjxdt\n"                                 \
	"D6I8BA2/y1jG6Xmoj2x2eErEiOU4mizbaKPJRaNmMGQwHQYDVR0OBBYEFPOPtU9h\n"                                 \
	"q94qtP/4Qu21xlYwsZSPMB8GA1UdIwQYMBaAFPOPtU9hq94qtP/4Qu21xlYwsZSP\n"                                 \
	"MA8GA1UdEwEB/wQFMAMBAf8wEQYDVR0RBAowCIIGYnJva2VyMAoGCCqGSM49BAMC\n"                                 \
	"A0cAMEQCIBDjPIacArAlWFcgIVM/IToe96z0iK1ltPQsq+HIxFMDAiAB6dwrtH8u\n"                                 \
	"BcYI5Zue5UDarpr4lqCShXreUPIwsbPnlA==\n"                                                             \
	"-----END CERTIFICATE-----\n"
#define CLIENT_KEY_PEM                                                                                       \
	"-----BEGIN PRIVATE KEY-----\n"                                                                      \
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAcTrEgpKMNy9oFdn\n"                                 \
	"dd5RzDNXN/rpP82ULMEtnz6gN0WhRANCAARDUZnTgvl2AsiGKhdqH7e3DVjRnq0f\n"                                 \
	"Je4i8uncI+BqJKSPF20PojwEDb/LWMbpeaiPbHZ4SsSI5TiaLNtoo8lF\n"                                         \
	"-----END PRIVATE KEY-----\n"
static const char JWKS[] = "{\"keys\":[{\"kid\":\"e1\",\"kty\":\"EC\",\"crv\":\"P-256\","
                           "\"x\":\"rXGfHg96XWONQ7rTP9sdHySSRb8h8DjHFQsg-vD0P_w\","
                           "\"y\":\"l-Xup74xVVGWQBVdLpbdOh5OWAedVncMxSUFO8MgNJQ\"},"
                           "{\"kid\":\"k1\",\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}";

static const struct {
	const char *name, *text;
	mode_t mode;
} FILES[] = {
    {"policies/default.lua",
     "local clock = require('clock')\n"
     "return function(req) return {allow = clock.weekday(req.now) < 7, tier = 'inbox'} end\n",
     0644},
    {"policies/clock.lua", "local M = {}\nfunction M.weekday(t) return (t // 86400 + 4) % 7 end\nreturn M\n",
     0644},
    {"policies/default_test.lua", "return {}\n", 0644},
    {"policies/support.lua", "return function(req) return {allow = broker.data ~= nil, tier = 'inbox'} end\n",
     0644},
    {"policies/support_data.json", "{\"support_orgs\":{\"acme\":true},\"nets\":[\"10.0.0.0/8\"]}", 0644},
    {"bad/bad.lua", "return function(req\n", 0644},
    {"spin/spin.lua", "while true do end\n", 0644},
    {"other/p.lua", "return function(req) return {allow = false} end\n", 0644},
    {"empty.lua", "", 0644},
    {"jwt.key", FILE_SECRET "\n", 0600},
    {"world.key", FILE_SECRET "\n", 0644},
    {"ed25519.pem", ED25519_PEM, 0644},
    {"p256.pem", P256_PEM, 0644},
    {"jwks.json", JWKS, 0644},
    {"bad.json", "{\"keys\":", 0644},
    {"client.pem", CLIENT_CERT, 0644},
    {"client.key", CLIENT_KEY_PEM, 0600},
    {"both.pem", CLIENT_CERT CLIENT_KEY_PEM, 0644},
};

/* The folders of FILES: each policy folder's other *.lua are its modules. */
static const char *const DIRS[] = {"policies", "other", "bad", "spin"};

static char dir[64];
static char conf_path[128];

/* No network in a fuzzer: every transfer fails as if nothing listened. */
CURLcode curl_easy_perform(CURL *curl)
{
	(void)curl;
	return CURLE_COULDNT_CONNECT;
}

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "ERROR: fuzz_config: %s%s%s\n", what, detail && detail[0] ? ": " : "",
	        detail ? detail : "");
	abort();
}

static void write_file(const char *name, const char *text, size_t len, mode_t mode)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0 || (len && write(fd, text, len) != (ssize_t)len) || fchmod(fd, mode) != 0 ||
	    close(fd) != 0)
		fail("cannot write the scratch folder", strerror(errno));
}

/* One load first: its one-time costs (OpenSSL's tables) are no load's own. */
static void warm_up(void)
{
	static const char warm[] =
	    "tenants = { w = { api_key = { env = 'CLIENT_KEY' }, policy = 'other/p.lua', "
	    "auth = { jwt = { algorithms = { 'HS256', 'EdDSA' }, hmac_secret = { file = "
	    "'jwt.key' }, public_key = { file = 'ed25519.pem' } } } } }";
	struct config *cfg;
	char err[512];

	write_file("broker.conf.lua", warm, sizeof(warm) - 1, 0644);
	if (!(cfg = config_load(conf_path, &policy_config_sandbox, err, sizeof(err))))
		fail("the warm-up configuration does not load", err);
	config_free(cfg);
}

/* Removes a scratch folder of this driver (the files it writes there). */
static void remove_scratch(const char *d)
{
	char path[512];

	for (size_t i = 0; i < sizeof(FILES) / sizeof(FILES[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", d, FILES[i].name);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/broker.conf.lua", d);
	unlink(path);
	for (size_t i = 0; i < sizeof(DIRS) / sizeof(DIRS[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", d, DIRS[i]);
		rmdir(path);
	}
	rmdir(d);
}

static void cleanup(void)
{
	remove_scratch(dir);
}

/* A finding ends the process at once (its scratch folder stays, as
 * evidence): the folders of drivers that are gone are removed here, so
 * that a long -fork run does not fill /dev/shm. */
static void remove_stale(const char *base)
{
	DIR *d = opendir(base);
	struct dirent *de;
	char path[512];

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end;
		long pid;
		if (strncmp(de->d_name, "fuzz_config.", 12) != 0)
			continue;
		pid = strtol(de->d_name + 12, &end, 10);
		if (*end || pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH) ||
		    pid == (long)getpid()) {
			snprintf(path, sizeof(path), "%s/%s", base, de->d_name);
			remove_scratch(path);
		}
	}
	closedir(d);
}

static void setup(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	char sub[128];

	remove_stale(base);
	snprintf(dir, sizeof(dir), "%s/fuzz_config.%ld", base, (long)getpid());
	if (mkdir(dir, 0700) != 0)
		fail("cannot make the scratch folder", strerror(errno));
	for (size_t i = 0; i < sizeof(DIRS) / sizeof(DIRS[0]); i++) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, DIRS[i]);
		mkdir(sub, 0755);
	}
	for (size_t i = 0; i < sizeof(FILES) / sizeof(FILES[0]); i++)
		write_file(FILES[i].name, FILES[i].text, strlen(FILES[i].text), FILES[i].mode);
	for (size_t i = 0; i < sizeof(SECRETS) / sizeof(SECRETS[0]); i++)
		setenv(SECRETS[i][0], SECRETS[i][1], 1);
	setenv("EMPTY_KEY", "", 1);
	unsetenv("COURIER_BASE_URL");
	snprintf(conf_path, sizeof(conf_path), "%s/broker.conf.lua", dir);
	warm_up();
}

/* An input that overran runs once more (fuzz_clock.h says why). */
static void check_time(const struct fuzz_clock *c, double limit_ms, const char *what)
{
	fuzz_check_time(c, limit_ms, "fuzz_config", what);
}

/* Whether err holds any 12 bytes of v[0..n) (at a 4-byte step) that the
 * input itself does not (anywhere: Lua reads past a NUL, so the whole input
 * counts). */
static bool gives_away(const char *err, const char *v, size_t n, const uint8_t *data, size_t size)
{
	for (size_t k = 0; k + 12 <= n; k += 4)
		if (memmem(err, strlen(err), v + k, 12) && !memmem(data, size, v + k, 12))
			return true;
	return false;
}

/* An error message must hold no secret's value, unless the input itself
 * did: the environment's and the file's, and the client key's text. */
static void check_secrets(const char *err, const uint8_t *data, size_t size)
{
	for (size_t i = 0; i < sizeof(SECRETS) / sizeof(SECRETS[0]); i++)
		if (gives_away(err, SECRETS[i][1], strlen(SECRETS[i][1]), data, size))
			fail("an error message holds a secret", err);
	if (gives_away(err, FILE_SECRET, strlen(FILE_SECRET), data, size))
		fail("an error message holds a secret", err);
	/* The key's base64, a line at a time (its PEM lines are no secret). */
	for (const char *l = strchr(CLIENT_KEY_PEM, '\n') + 1, *e; (e = strchr(l, '\n')) && *l != '-';
	     l = e + 1)
		if (gives_away(err, l, (size_t)(e - l), data, size))
			fail("an error message holds the client key", err);
}

static void run_input(const uint8_t *data, size_t size)
{
	struct config *cfg;
	struct policy_engine *e;
	struct fuzz_clock c;
	char err[1024];

	if (!dir[0]) {
		setup();
		atexit(cleanup);
	}
	write_file("broker.conf.lua", (const char *)data, size, 0644);

	fuzz_clock_start(&c);
	cfg = config_load(conf_path, &policy_config_sandbox, err, sizeof(err));
	check_time(&c, 2.0 * CONFIG_BUDGET_MS + CONFIG_WALK_MS, "loading the configuration");
	if (fuzz_verbose())
		fprintf(stderr, "fuzz_config: %s\n", cfg ? "loaded" : err);
	if (!cfg) {
		if (!err[0])
			fail("a configuration refused without a reason", NULL);
		check_secrets(err, data, size);
		return;
	}
	if (cfg->n_tenants == 0)
		fail("a configuration without tenants loaded", NULL);

	/* What `check` does next: compile every tenant's policy. */
	cfg->policy_max_instructions = POLICY_INSTRUCTIONS;
	cfg->policy_max_memory_bytes = POLICY_MEMORY_BYTES;
	cfg->policy_timeout_ms = POLICY_TIMEOUT_MS;
	fuzz_clock_start(&c);
	e = policy_engine_new(cfg, err, sizeof(err));
	check_time(&c, 2.0 * POLICY_TIMEOUT_MS * (double)cfg->n_tenants + 20, "compiling the policies");
	if (fuzz_verbose())
		fprintf(stderr, "fuzz_config: engine: %s\n", e ? "built" : err);
	if (e)
		policy_engine_free(e);
	else if (!err[0])
		fail("an engine refused without a reason", NULL);
	else
		check_secrets(err, data, size);
	config_free(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_run_input(run_input, data, size);
	return 0;
}

/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * examples/echo: the smallest complete server on the ringprot runtime.
 *
 * Everything but the handler is server/'s (srv_main): command line,
 * configuration, listeners, worker threads, one fiber per connection,
 * limits, TLS, PROXY protocol, metrics, SIGTERM drain. The handler reads
 * what comes and writes it back; c->in flushes c->out before it waits
 * for more (prot_setflushonread), so a burst of input costs one send.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <ringprot/server.h>
#include <ringprot/srv-config.h>

#define ECHO_DEFAULT_LISTEN "127.0.0.1:7777"

static atomic_uint_fast64_t echoed;

/* -P: park a connection whenever it has no input buffered. */
static bool park_idle;

static int echo_resume(struct srv_conn *c, unsigned wake);

/*
 * The service: every byte back, until the client is done. With -P, a
 * connection that has nothing more to read parks (no fiber, no buffer)
 * and comes back in echo_resume when bytes arrive.
 */
static int echo_serve(struct srv_conn *c)
{
	char buf[4096];
	int n;

	while ((n = prot_read(c->in, buf, sizeof(buf))) > 0) {
		if (prot_write(c->out, buf, (unsigned)n) == EOF)
			return prot_errno(c->out);
		atomic_fetch_add_explicit(&echoed, (uint64_t)n,
					  memory_order_relaxed);
		if (park_idle && !prot_input_pending(c->in))
			return srv_park(c, echo_resume);
	}
	if (prot_IS_ERROR(c->in))
		return prot_errno(c->in);
	return 0;
}

static int echo_resume(struct srv_conn *c, unsigned wake)
{
	if (wake & SRV_WAKE_SHUTDOWN)
		return 0;
	return echo_serve(c);
}

static int echo_handler(struct srv_conn *c)
{
	if (park_idle)
		return srv_park(c, echo_resume);
	return echo_serve(c);
}

static const struct srv_cfg_key echo_keys[] = {
	{"park_idle", SRV_CFG_BOOL, "no", NULL, 0, 0, 0,
	 "park idle connections: no fiber, no buffer while a client is "
	 "silent"},
};

static const struct srv_main_flag echo_flags[] = {
	{'P', "park_idle=yes", "park idle connections (park_idle=yes)"},
};

static const struct srv_main_service echo_services[] = {
	{.opts = {.name = "echo", .handler = echo_handler},
	 .default_listen = ECHO_DEFAULT_LISTEN},
};

static int echo_setup(struct srv *s, const struct srv_config *cfg, void *arg)
{
	(void)s;
	(void)arg;
	park_idle = srv_config_bool(cfg, "echo", "park_idle");
	return 0;
}

/* "listening on 127.0.0.1:7777 (io_uring defer-taskrun)" per listener. */
static void echo_started(struct srv *s, void *arg)
{
	(void)arg;
	srv_print_listeners(s, srv_service_find(s, "echo"), stdout);
}

/* The closing summary the tests and the benchmark read. */
static void echo_stopped(struct srv *s, void *arg)
{
	struct srv_stats st;

	(void)arg;
	srv_stats(s, &st);
	printf("echo: stopped: %llu connections, %llu bytes echoed, "
	       "%llu errors\n",
	       (unsigned long long)st.conns_total,
	       (unsigned long long)atomic_load(&echoed),
	       (unsigned long long)st.accept_errors);
	(void)fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct srv_main_opts mo = {
		.prog = "ringprot-echo",
		.summary = "Echo every byte back (default listen "
			   ECHO_DEFAULT_LISTEN ").",
		.services = echo_services,
		.nservices = 1,
		.keys = echo_keys,
		.nkeys = 1,
		.flags = echo_flags,
		.nflags = 1,
		.setup = echo_setup,
		.started = echo_started,
		.stopped = echo_stopped,
	};

	return srv_main(argc, argv, &mo);
}

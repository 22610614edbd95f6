/*-------------------------------------------------------------------------
 * stream_listen.c
 *	  stream_listen: the command-line client for activations
 *	  (docs/stream_listen.md).  Prints one JSON line per activation of the
 *	  given channels (the stream.activations row, as row_to_json gives it),
 *	  or runs a command per activation with that line on its standard input.
 *
 * This file owns the program's frame: option parsing and main, the libpq
 * connection and its reconnection with back-off, LISTEN, the wait loop
 * (poll() on the connection's socket and on a self-pipe written by the
 * SIGINT/SIGTERM handler), and the reports on stderr.  outbox.c owns what
 * is read from the outbox and delivered: the catch-up from
 * stream.activations, stream.consume/stream.ack for --consumer, the
 * notifications' payloads, and delivery (stdout or --exec, retried until it
 * succeeds).  stream_listen.h declares what the two share.
 *
 * Two modes:
 *
 * - With --consumer NAME the outbox is the source of truth and NOTIFY only
 *   a wake-up: LISTEN on every channel first, then stream.consume until
 *   empty, handle each row in id order, stream.ack the highest handled id;
 *   again on every notification, after every reconnect, and every
 *   IDLE_CHECK_MS.  Because LISTEN comes before the first consume, a row
 *   committed at any time is either returned by that consume or announced by
 *   a later notification: nothing is missed.  Rows handled but not
 *   acknowledged (the connection dropped in between) are remembered per
 *   channel and not handled again after a reconnect, so only a crash of the
 *   client itself repeats rows: at least once.
 *
 * - Without it the notifications are printed as they come (a truncated
 *   one after reading its row by id), from a position: the highest id
 *   printed; at start-up --since or the outbox's end, read before LISTEN.
 *   After LISTEN, after every reconnect and every IDLE_CHECK_MS the rows
 *   after the position are read from stream.activations; notifications at
 *   or below it are skipped (printed by such a catch-up already, or before
 *   --since).  Outbox ids commit in id order (docs/activations.md), so the
 *   position never skips a row.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libpq-fe.h"

#include "stream_listen.h"

#ifndef STREAM_LISTEN_VERSION
#define STREAM_LISTEN_VERSION "unknown"
#endif

/* command line */
static const char *conninfo = NULL;
char	  **channels = NULL;
int			nchannels = 0;
const char *consumer = NULL;
const char *exec_cmd = NULL;
static bool since_given = false;
static int64_t since_id = 0;

/* state */
PGconn	   *conn = NULL;
static bool ever_connected = false;
char	   *channel_array = NULL;	/* text[] literal of channels */
bool	   *dirty = NULL;		/* consumer: a notification came */
int64_t	   *done_id = NULL;		/* consumer: highest id handled, per channel */
int64_t		last_id = 0;		/* plain: highest id printed (position) */

volatile sig_atomic_t stop_requested = 0;
static int	signal_pipe[2] = {-1, -1};

static void
usage(FILE *f)
{
	fprintf(f,
			"%s prints the activations of stream_events channels as JSON lines.\n\n"
			"Usage:\n"
			"  %s -d CONNINFO -c CHANNEL [-c CHANNEL ...] [OPTION]...\n\n"
			"Options:\n"
			"  -d, --dbname=CONNINFO  database to connect to (a name or conninfo string;\n"
			"                         default: the PG* environment variables)\n"
			"  -c, --channel=CHANNEL  channel to listen on (repeatable, at least one)\n"
			"      --consumer=NAME    durable consumer: catch up from stream.activations,\n"
			"                         acknowledge with stream.ack (at least once)\n"
			"      --exec=CMD         run CMD with /bin/sh -c once per activation, the JSON\n"
			"                         line on its stdin (instead of printing it); retried\n"
			"                         with back-off until it exits with 0\n"
			"      --since=ID         without --consumer: first print the rows of the\n"
			"                         channels with id > ID from stream.activations\n"
			"  -h, --help             show this help, then exit\n"
			"  -V, --version          output version information, then exit\n\n"
			"Each line is a stream.activations row as row_to_json gives it: id, activation,\n"
			"key, payload, event_id, occurred_at, received_at, channel, fired_at.\n"
			"A lost connection is re-established with back-off (100 ms doubling to 5 s).\n\n"
			"Exit status:\n"
			"  0  stopped by SIGINT or SIGTERM (the current activation is finished and\n"
			"     acknowledged first)\n"
			"  1  usage error\n"
			"  2  could not connect at start-up, or a server error that retrying cannot\n"
			"     fix (e.g. the extension is not installed, permission denied)\n"
			"  3  standard output could not be written\n",
			PROGNAME, PROGNAME);
}

void
warn(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", PROGNAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

void
die(int code, const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", PROGNAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (conn)
		PQfinish(conn);
	exit(code);
}

void *
xmalloc(size_t size)
{
	void	   *p = malloc(size);

	if (p == NULL)
		die(EXIT_FATAL, "out of memory");
	return p;
}

/*
 * libpq messages span lines (and end with a newline); makes one line of
 * one, for reports on stderr.
 */
static const char *
oneline(const char *msg)
{
	static char buf[1024];
	char	   *out = buf;
	bool		space = false;

	for (const char *p = msg ? msg : ""; *p && out < buf + sizeof(buf) - 1; p++)
	{
		if (*p == '\n' || *p == '\t' || *p == ' ')
		{
			space = true;
			continue;
		}
		if (space && out > buf)
			*out++ = ' ';
		space = false;
		*out++ = *p;
	}
	*out = '\0';
	return buf;
}

/* server notices and messages that arrive while idle (e.g. FATAL) */
static void
notice_processor(void *arg, const char *message)
{
	(void) arg;
	warn("server: %s", oneline(message));
}

/* ---------- signals ---------- */

static void
on_signal(int sig)
{
	int			save_errno = errno;

	if (stop_requested)
	{
		/* a second signal: leave at once */
		signal(sig, SIG_DFL);
		raise(sig);
	}
	stop_requested = 1;
	if (signal_pipe[1] >= 0)
	{
		ssize_t		rc = write(signal_pipe[1], "x", 1);

		(void) rc;				/* the pipe full is fine: it is readable */
	}
	errno = save_errno;
}

static void
setup_signals(void)
{
	struct sigaction sa;

	if (pipe(signal_pipe) != 0)
		die(EXIT_FATAL, "could not create pipe: %s", strerror(errno));
	for (int i = 0; i < 2; i++)
	{
		fcntl(signal_pipe[i], F_SETFL, fcntl(signal_pipe[i], F_GETFL) | O_NONBLOCK);
		fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* a closed stdout or --exec pipe is reported by write(), not a signal */
	signal(SIGPIPE, SIG_IGN);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Waits until sock is readable (sock >= 0), ms have passed, or a stop was
 * requested.  Returns 1 if readable, 0 on timeout, -1 on a stop request.
 */
int
wait_for(int sock, int ms)
{
	int64_t		end = now_ms() + ms;

	for (;;)
	{
		struct pollfd fds[2];
		int			nfds = 1;
		int64_t		left;
		int			rc;

		if (stop_requested)
			return -1;
		left = end - now_ms();
		if (left <= 0)
			return 0;
		fds[0].fd = signal_pipe[0];
		fds[0].events = POLLIN;
		fds[0].revents = 0;
		if (sock >= 0)
		{
			fds[1].fd = sock;
			fds[1].events = POLLIN;
			fds[1].revents = 0;
			nfds = 2;
		}
		rc = poll(fds, nfds, (int) left);
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			die(EXIT_FATAL, "poll() failed: %s", strerror(errno));
		}
		if (stop_requested)
			return -1;
		if (nfds == 2 && fds[1].revents != 0)
			return 1;
	}
}

/* ---------- connection ---------- */

/*
 * Reports a failed query.  A lost connection, or an error of a class that
 * may go away (connection, resources, operator intervention, system,
 * transaction rollback), means reconnect; anything else (no such function,
 * permission denied, ...) ends the program with EXIT_FATAL.
 */
Step
server_error(PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : "";

	if (msg == NULL || *msg == '\0')
		msg = PQerrorMessage(conn);
	if (PQstatus(conn) == CONNECTION_BAD)
	{
		warn("connection lost during %s: %s", what, oneline(msg));
		return STEP_LOST;
	}
	if (state == NULL ||
		strncmp(state, "08", 2) == 0 || strncmp(state, "40", 2) == 0 ||
		strncmp(state, "53", 2) == 0 || strncmp(state, "57", 2) == 0 ||
		strncmp(state, "58", 2) == 0)
	{
		warn("%s failed: %s", what, oneline(msg));
		return STEP_LOST;
	}
	die(EXIT_FATAL, "%s failed: %s", what, oneline(msg));
	return STEP_LOST;			/* not reached */
}

/*
 * Connects and LISTENs on every channel.  On the first connection a failure
 * is fatal; later ones report it and return false (the caller retries).
 */
static bool
connect_once(void)
{
	const char *keywords[] = {"dbname", "fallback_application_name", NULL};
	const char *values[] = {conninfo, PROGNAME, NULL};
	PGresult   *res;

	conn = PQconnectdbParams(keywords, values, 1);
	if (conn == NULL)
		die(EXIT_FATAL, "out of memory");
	PQsetNoticeProcessor(conn, notice_processor, NULL);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		if (!ever_connected)
			die(EXIT_FATAL, "could not connect: %s", oneline(PQerrorMessage(conn)));
		warn("could not connect: %s", oneline(PQerrorMessage(conn)));
		PQfinish(conn);
		conn = NULL;
		return false;
	}

	/*
	 * Plain mode without --since starts at the outbox's current end, read
	 * before LISTEN: the catch-up after LISTEN then prints what committed in
	 * between, and nothing is both printed and skipped.
	 */
	if (!ever_connected && consumer == NULL && !since_given)
	{
		res = PQexec(conn, "SELECT coalesce(max(id), 0) FROM stream.activations");
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			die(EXIT_FATAL, "could not read stream.activations: %s",
				oneline(PQresultErrorMessage(res)));
		last_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
	}

	for (int i = 0; i < nchannels; i++)
	{
		const char *name = channels[i];
		char	   *ident;
		char	   *sql;

		ident = PQescapeIdentifier(conn, name, strlen(name));
		if (ident == NULL)
			die(EXIT_FATAL, "invalid channel name \"%s\": %s", name,
				oneline(PQerrorMessage(conn)));
		sql = xmalloc(strlen(ident) + 8);
		sprintf(sql, "LISTEN %s", ident);
		PQfreemem(ident);
		res = PQexec(conn, sql);
		free(sql);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			if (!ever_connected)
				die(EXIT_FATAL, "LISTEN failed: %s", oneline(PQresultErrorMessage(res)));
			warn("LISTEN failed: %s", oneline(PQresultErrorMessage(res)));
			PQclear(res);
			PQfinish(conn);
			conn = NULL;
			return false;
		}
		PQclear(res);
	}
	if (!ever_connected)
	{
		/* one line on stderr: from here on nothing is missed */
		fprintf(stderr, "%s: listening on", PROGNAME);
		for (int i = 0; i < nchannels; i++)
			fprintf(stderr, "%s \"%s\"", i > 0 ? "," : "", channels[i]);
		if (consumer)
			fprintf(stderr, " as consumer \"%s\"", consumer);
		fputc('\n', stderr);
		fflush(stderr);
	}
	ever_connected = true;
	return true;
}

/* After a lost connection: retries with back-off until connected again. */
static void
reconnect(void)
{
	int			backoff = BACKOFF_MIN_MS;

	if (conn)
		PQfinish(conn);
	conn = NULL;
	for (int attempt = 1;; attempt++)
	{
		warn("reconnecting in %d ms (attempt %d)", backoff, attempt);
		if (wait_for(-1, backoff) < 0)
			exit(EXIT_STOPPED);
		if (connect_once())
		{
			warn("reconnected");
			return;
		}
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
}
/* ---------- the loop ---------- */

/*
 * One connection's life: catch up, then wait for notifications and handle
 * them, until the connection is lost or a stop is requested.
 */
static Step
session(void)
{
	Step		r = consumer ? consume_all() : catch_up_plain();

	if (r != STEP_OK)
		return r;
	for (;;)
	{
		PGnotify   *n;
		bool		consumed = false;
		int			w;

		/* notifications libpq has already read (also during queries) */
		while ((n = PQnotifies(conn)) != NULL)
		{
			if (consumer)
			{
				for (int i = 0; i < nchannels; i++)
					if (strcmp(n->relname, channels[i]) == 0)
						dirty[i] = true;
			}
			else
				r = plain_notification(n);
			PQfreemem(n);
			if (r != STEP_OK)
				return r;
			if (stop_requested)
				return STEP_STOP;
		}
		if (consumer)
		{
			for (int i = 0; i < nchannels; i++)
			{
				if (!dirty[i])
					continue;
				dirty[i] = false;
				consumed = true;
				r = consume_channel(i);
				if (r != STEP_OK)
					return r;
			}
			if (consumed)
				continue;
		}
		if (stop_requested)
			return STEP_STOP;

		w = wait_for(PQsocket(conn), IDLE_CHECK_MS);
		if (w < 0)
			return STEP_STOP;
		if (w == 0)
		{
			r = consumer ? consume_all() : catch_up_plain();
			if (r != STEP_OK)
				return r;
			continue;
		}
		if (!PQconsumeInput(conn) || PQstatus(conn) == CONNECTION_BAD)
		{
			warn("connection lost: %s", oneline(PQerrorMessage(conn)));
			return STEP_LOST;
		}
	}
}

/* ---------- main ---------- */

static void
usage_error(const char *fmt,...) __attribute__((format(printf, 1, 2)));

static void
usage_error(const char *fmt,...)
{
	va_list		ap;

	if (fmt)
	{
		fprintf(stderr, "%s: ", PROGNAME);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	fprintf(stderr, "Try \"%s --help\" for more information.\n", PROGNAME);
	exit(EXIT_USAGE);
}

/* the channels as a text[] literal: {"a","b"} */
static char *
make_channel_array(void)
{
	size_t		size = 3;
	char	   *buf;
	char	   *p;

	for (int i = 0; i < nchannels; i++)
		size += 2 * strlen(channels[i]) + 3;
	buf = p = xmalloc(size);
	*p++ = '{';
	for (int i = 0; i < nchannels; i++)
	{
		if (i > 0)
			*p++ = ',';
		*p++ = '"';
		for (const char *s = channels[i]; *s; s++)
		{
			if (*s == '"' || *s == '\\')
				*p++ = '\\';
			*p++ = *s;
		}
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	return buf;
}

enum
{
	OPT_CONSUMER = 256,
	OPT_EXEC,
	OPT_SINCE
};

int
main(int argc, char **argv)
{
	static const struct option long_options[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"channel", required_argument, NULL, 'c'},
		{"consumer", required_argument, NULL, OPT_CONSUMER},
		{"exec", required_argument, NULL, OPT_EXEC},
		{"since", required_argument, NULL, OPT_SINCE},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	channels = xmalloc(sizeof(char *) * (argc + 1));
	while ((c = getopt_long(argc, argv, "d:c:hV", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				conninfo = optarg;
				break;
			case 'c':
				{
					bool		dup = false;

					if (*optarg == '\0')
						usage_error("a channel name must not be empty");
					for (int i = 0; i < nchannels; i++)
						if (strcmp(channels[i], optarg) == 0)
							dup = true;
					if (!dup)
						channels[nchannels++] = optarg;
					break;
				}
			case OPT_CONSUMER:
				if (*optarg == '\0')
					usage_error("a consumer name must not be empty");
				consumer = optarg;
				break;
			case OPT_EXEC:
				if (*optarg == '\0')
					usage_error("--exec needs a command");
				exec_cmd = optarg;
				break;
			case OPT_SINCE:
				{
					char	   *end;

					errno = 0;
					since_id = strtoll(optarg, &end, 10);
					if (end == optarg || *end != '\0' || errno != 0 || since_id < 0)
						usage_error("invalid --since \"%s\": expected an activation id (an integer >= 0)",
									optarg);
					since_given = true;
					break;
				}
			case 'h':
				usage(stdout);
				exit(0);
			case 'V':
				printf("%s (stream_events) %s\n", PROGNAME, STREAM_LISTEN_VERSION);
				exit(0);
			default:
				/* getopt_long printed the complaint */
				usage_error(NULL);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument \"%s\"", argv[optind]);
	if (nchannels == 0)
		usage_error("no channel given (use -c CHANNEL)");
	if (consumer && since_given)
		usage_error("--since cannot be used with --consumer (a consumer resumes after its last acknowledged id)");

	channel_array = make_channel_array();
	dirty = xmalloc(sizeof(bool) * nchannels);
	done_id = xmalloc(sizeof(int64_t) * nchannels);
	for (int i = 0; i < nchannels; i++)
	{
		dirty[i] = false;
		done_id[i] = 0;
	}
	last_id = since_id;

	setup_signals();
	connect_once();				/* exits with EXIT_FATAL if it cannot */
	for (;;)
	{
		Step		r = session();

		if (r == STEP_STOP)
			break;
		reconnect();
	}
	PQfinish(conn);
	return EXIT_STOPPED;
}

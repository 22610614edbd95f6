/*-------------------------------------------------------------------------
 * outbox.c
 *	  stream_listen: what is read from the outbox and delivered
 *	  (docs/stream_listen.md; the two modes are described at the top of
 *	  stream_listen.c).
 *
 * This file owns delivery (a JSON line on stdout, or --exec's command run
 * with it on its standard input and retried with back-off until it exits
 * with 0), the consumer mode (stream.consume until empty, stream.ack of the
 * highest handled id, rows handled but not acknowledged remembered per
 * channel) and the plain mode (the catch-up from stream.activations after
 * the position, the notifications' payloads, a truncated one's row read by
 * its id).  The connection, the wait loop and the reports on stderr are
 * stream_listen.c's.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libpq-fe.h"

#include "stream_listen.h"

static int	exec_backoff_ms = 0;

/* consumer: the batch being handled (see ack_pending) */
static int	batch_channel = -1;
static int64_t batch_handled = 0;
static int64_t batch_acked = 0;

/* ---------- delivery ---------- */

static void
write_line(const char *json)
{
	if (fputs(json, stdout) == EOF || fputc('\n', stdout) == EOF ||
		fflush(stdout) == EOF)
		die(EXIT_OUTPUT, "could not write to standard output: %s", strerror(errno));
}

/* Runs --exec's command with the line on its stdin; true if it exited 0. */
static bool
run_command(const char *json, int64_t id)
{
	int			fds[2];
	pid_t		pid;
	int			status;
	size_t		len = strlen(json);
	char	   *line = xmalloc(len + 2);
	size_t		off = 0;

	memcpy(line, json, len);
	line[len++] = '\n';
	line[len] = '\0';

	if (pipe(fds) != 0)
	{
		warn("could not create pipe: %s", strerror(errno));
		free(line);
		return false;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
	{
		warn("could not fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		free(line);
		return false;
	}
	if (pid == 0)
	{
		dup2(fds[0], STDIN_FILENO);
		close(fds[0]);
		close(fds[1]);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", exec_cmd, (char *) NULL);
		fprintf(stderr, "%s: could not run /bin/sh: %s\n", PROGNAME, strerror(errno));
		_exit(127);
	}
	close(fds[0]);
	while (off < len)
	{
		ssize_t		n = write(fds[1], line + off, len - off);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			break;				/* EPIPE: the command did not read it all */
		}
		off += n;
	}
	close(fds[1]);
	free(line);
	while (waitpid(pid, &status, 0) < 0)
	{
		if (errno != EINTR)
		{
			warn("waitpid failed: %s", strerror(errno));
			return false;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return true;
	if (WIFEXITED(status))
		warn("command failed for activation %" PRId64 ": exit status %d",
			 id, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		warn("command failed for activation %" PRId64 ": terminated by signal %d",
			 id, WTERMSIG(status));
	else
		warn("command failed for activation %" PRId64, id);
	return false;
}

/*
 * Delivers one activation: prints it, or runs --exec's command until it
 * succeeds.  Before the first retry, before_retry (if any) acknowledges
 * what was handled so far.
 */
static Step
handle_row(const char *json, int64_t id, Step (*before_retry) (void))
{
	for (;;)
	{
		if (exec_cmd == NULL)
		{
			write_line(json);
			return STEP_OK;
		}
		if (run_command(json, id))
		{
			exec_backoff_ms = 0;
			return STEP_OK;
		}
		if (before_retry)
		{
			Step		r = before_retry();

			if (r != STEP_OK)
				return r;
		}
		exec_backoff_ms = exec_backoff_ms == 0 ? BACKOFF_MIN_MS :
			(exec_backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : exec_backoff_ms * 2);
		warn("retrying activation %" PRId64 " in %d ms", id, exec_backoff_ms);
		if (wait_for(-1, exec_backoff_ms) < 0)
			return STEP_STOP;
	}
}

/* ---------- consumer mode ---------- */

/* Acknowledges the batch's highest handled id, if not done yet. */
static Step
ack_pending(void)
{
	char		idbuf[32];
	const char *params[2];
	PGresult   *res;

	if (batch_channel < 0 || batch_handled <= batch_acked)
		return STEP_OK;
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, batch_handled);
	params[0] = consumer;
	params[1] = idbuf;
	res = PQexecParams(conn, "SELECT stream.ack($1, $2::bigint)", 2, NULL,
					   params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		Step		r = server_error(res, "stream.ack");

		PQclear(res);
		return r;
	}
	PQclear(res);
	batch_acked = batch_handled;
	return STEP_OK;
}

/*
 * Consumes channel ch until stream.consume returns a short batch: handles
 * each row in id order (skipping rows this process handled before a
 * reconnect), then acknowledges the highest.
 */
Step
consume_channel(int ch)
{
	for (;;)
	{
		char		maxbuf[16];
		const char *params[3] = {consumer, channels[ch], maxbuf};
		PGresult   *res;
		Step		r = STEP_OK;
		int			n;

		snprintf(maxbuf, sizeof(maxbuf), "%d", CONSUME_BATCH);
		res = PQexecParams(conn,
						   "SELECT a.id, row_to_json(a)::text"
						   " FROM stream.consume($1, $2, $3::integer) a ORDER BY a.id",
						   3, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			r = server_error(res, "stream.consume");
			PQclear(res);
			return r;
		}
		n = PQntuples(res);
		batch_channel = ch;
		batch_handled = batch_acked = 0;
		for (int i = 0; i < n; i++)
		{
			int64_t		id = strtoll(PQgetvalue(res, i, 0), NULL, 10);

			if (id > done_id[ch])
			{
				r = handle_row(PQgetvalue(res, i, 1), id, ack_pending);
				if (r != STEP_OK)
					break;
				done_id[ch] = id;
			}
			batch_handled = id;
			if (stop_requested)
			{
				r = STEP_STOP;
				break;
			}
		}
		PQclear(res);
		if (r != STEP_LOST)
		{
			Step		a = ack_pending();

			if (a != STEP_OK)
				r = a;
		}
		batch_channel = -1;
		if (r != STEP_OK)
			return r;
		if (n < CONSUME_BATCH)
			return STEP_OK;
	}
}

Step
consume_all(void)
{
	for (int i = 0; i < nchannels; i++)
	{
		Step		r;

		dirty[i] = false;
		r = consume_channel(i);
		if (r != STEP_OK)
			return r;
	}
	return STEP_OK;
}

/* ---------- plain mode ---------- */

/* Prints the rows of the channels after the position, in id order. */
Step
catch_up_plain(void)
{
	for (;;)
	{
		char		idbuf[32];
		char		limbuf[16];
		const char *params[3];
		PGresult   *res;
		int			n;

		snprintf(idbuf, sizeof(idbuf), "%" PRId64, last_id);
		snprintf(limbuf, sizeof(limbuf), "%d", CATCHUP_BATCH);
		params[0] = channel_array;
		params[1] = idbuf;
		params[2] = limbuf;
		res = PQexecParams(conn,
						   "SELECT a.id, row_to_json(a)::text FROM stream.activations a"
						   " WHERE a.channel = ANY ($1::text[]) AND a.id > $2::bigint"
						   " ORDER BY a.id LIMIT $3::integer",
						   3, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			Step		r = server_error(res, "reading stream.activations");

			PQclear(res);
			return r;
		}
		n = PQntuples(res);
		for (int i = 0; i < n; i++)
		{
			int64_t		id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			Step		r = handle_row(PQgetvalue(res, i, 1), id, NULL);

			if (r != STEP_OK)
			{
				PQclear(res);
				return r;
			}
			last_id = id;
			if (stop_requested)
			{
				PQclear(res);
				return STEP_STOP;
			}
		}
		PQclear(res);
		if (n < CATCHUP_BATCH)
			return STEP_OK;
	}
}

/*
 * Reads the id at the start of a NOTIFY payload: {"id":n,... (the row),
 * {"id": n, "truncated": true} (too long for NOTIFY) or {"id": n} (an
 * activation with notify => 'id').  *truncated: the row must be read from
 * the outbox by its id, where row level security shows it only to roles
 * that own or were granted the channel.
 */
static bool
parse_payload(const char *p, int64_t *id, bool *truncated, bool *more)
{
	char	   *end;

	while (*p == ' ')
		p++;
	if (*p++ != '{')
		return false;
	while (*p == ' ')
		p++;
	if (strncmp(p, "\"id\"", 4) != 0)
		return false;
	p += 4;
	while (*p == ' ')
		p++;
	if (*p++ != ':')
		return false;
	while (*p == ' ')
		p++;
	errno = 0;
	*id = strtoll(p, &end, 10);
	if (end == p || errno != 0)
		return false;
	*truncated = strcmp(end, ", \"truncated\": true}") == 0 || strcmp(end, "}") == 0;
	/* more rows than were announced one by one (docs/activations.md) */
	*more = strcmp(end, ", \"more\": true}") == 0;
	return true;
}

/* A NOTIFY that carries the id only: the row is read from the outbox. */
static Step
handle_truncated(int64_t id)
{
	char		idbuf[32];
	const char *params[1];
	PGresult   *res;
	Step		r;

	snprintf(idbuf, sizeof(idbuf), "%" PRId64, id);
	params[0] = idbuf;
	res = PQexecParams(conn,
					   "SELECT row_to_json(a)::text FROM stream.activations a WHERE a.id = $1::bigint",
					   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		r = server_error(res, "reading stream.activations");
		PQclear(res);
		return r;
	}
	if (PQntuples(res) == 0)
	{
		warn("activation %" PRId64 " is not in stream.activations for this role: pruned, or its channel is not granted to it (stream.grant_channel)", id);
		PQclear(res);
		return STEP_OK;
	}
	r = handle_row(PQgetvalue(res, 0, 0), id, NULL);
	PQclear(res);
	return r;
}

Step
plain_notification(PGnotify *n)
{
	int64_t		id;
	bool		truncated;
	bool		more;
	Step		r;

	if (!parse_payload(n->extra, &id, &truncated, &more))
	{
		warn("ignoring a notification on channel \"%s\" that is not an activation", n->relname);
		return STEP_OK;
	}
	if (id <= last_id)
		return STEP_OK;			/* printed by a catch-up, or before --since */
	if (more)
		return catch_up_plain();
	r = truncated ? handle_truncated(id) : handle_row(n->extra, id, NULL);
	if (r == STEP_OK)
		last_id = id;
	return r;
}

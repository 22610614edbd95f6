/*-------------------------------------------------------------------------
 * stream_listen.h
 *	  What the files of the stream_listen client share
 *	  (docs/stream_listen.md): exit codes and limits, the command line and
 *	  the state that stream_listen.c owns, its helpers (reports, the
 *	  connection's errors, waiting), and outbox.c's catch-up and delivery
 *	  that the wait loop calls.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_LISTEN_H
#define STREAM_LISTEN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libpq-fe.h"

#define PROGNAME "stream_listen"

/* exit codes (documented in --help and docs/stream_listen.md) */
#define EXIT_STOPPED	0		/* SIGINT or SIGTERM: clean exit */
#define EXIT_USAGE		1		/* bad command line */
#define EXIT_FATAL		2		/* no connection at start-up, or an error
								 * retrying cannot fix */
#define EXIT_OUTPUT		3		/* standard output could not be written */

#define BACKOFF_MIN_MS	100		/* reconnect and --exec retry back-off */
#define BACKOFF_MAX_MS	5000
#define CONSUME_BATCH	100		/* rows per stream.consume call */
#define CATCHUP_BATCH	1000	/* rows per outbox read in plain mode */
#define IDLE_CHECK_MS	30000	/* catch up (and so check the connection)
								 * when idle this long */

typedef enum
{
	STEP_OK,					/* go on */
	STEP_LOST,					/* connection lost or transient error:
								 * reconnect */
	STEP_STOP					/* SIGINT/SIGTERM: leave */
} Step;

/* command line (stream_listen.c) */
extern char **channels;
extern int	nchannels;
extern const char *consumer;
extern const char *exec_cmd;

/* state (stream_listen.c) */
extern PGconn *conn;
extern char *channel_array;		/* text[] literal of channels */
extern bool *dirty;				/* consumer: a notification came */
extern int64_t *done_id;		/* consumer: highest id handled, per channel */
extern int64_t last_id;			/* plain: highest id printed (position) */
extern volatile sig_atomic_t stop_requested;

/* stream_listen.c */
extern void warn(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern void die(int code, const char *fmt,...) __attribute__((format(printf, 2, 3)));
extern void *xmalloc(size_t size);
extern Step server_error(PGresult *res, const char *what);
extern int	wait_for(int sock, int ms);

/* outbox.c */
extern Step consume_channel(int ch);
extern Step consume_all(void);
extern Step catch_up_plain(void);
extern Step plain_notification(PGnotify *n);

#endif							/* STREAM_LISTEN_H */

/*-------------------------------------------------------------------------
 * pressure.c
 *	  How contended the machine's CPUs are, for the worker's duty cycle
 *	  (worker.c): the share of recent wall-clock time during which some
 *	  runnable task waited for a CPU, from Linux's pressure stall
 *	  information (/proc/pressure/cpu, the "some" line's cumulative
 *	  "total=" in microseconds).
 *
 * The worker rests between the rounds that producers' commits ask for so
 * that it does not take CPU time from the producers.  That only matters
 * while tasks queue for a CPU: on a machine with a free CPU the rest buys
 * the producers nothing and costs every activation its length in latency.
 * The share is measured over windows of PRESSURE_WINDOW_MS, so a reading
 * costs one read() of a small proc file at most every window.  Where the
 * file is missing or unreadable (another kernel, PSI disabled, a sandbox)
 * the CPUs count as fully contended: the worker keeps its full rest.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "utils/timestamp.h"

#include "worker/worker.h"

#define PRESSURE_FILE "/proc/pressure/cpu"
#define PRESSURE_WINDOW_MS 100

/* -2: not opened yet; -1: not available in this process */
static int	pressure_fd = -2;
static TimestampTz window_start = 0;
static uint64 window_total = 0;
static double last_share = 1.0;

/* the "some" line's total (microseconds stalled), or false */
static bool
read_total(uint64 *total)
{
	char		buf[256];
	ssize_t		n;
	char	   *p;
	char	   *end;

	if (lseek(pressure_fd, 0, SEEK_SET) != 0)
		return false;
	n = read(pressure_fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	/* "some avg10=0.22 avg60=1.90 avg300=6.26 total=2074482759\nfull ..." */
	end = strchr(buf, '\n');
	if (end)
		*end = '\0';
	if (strncmp(buf, "some ", 5) != 0 || (p = strstr(buf, " total=")) == NULL)
		return false;
	p += strlen(" total=");
	errno = 0;
	*total = strtou64(p, &end, 10);
	return errno == 0 && end != p;
}

/*
 * The share (0..1) of the last complete window during which some task
 * waited for a CPU; 1 where that cannot be known.  now: the caller's
 * current time.
 */
double
worker_cpu_pressure(TimestampTz now)
{
	uint64		total;

	if (pressure_fd == -2)
	{
		pressure_fd = open(PRESSURE_FILE, O_RDONLY | O_CLOEXEC);
		if (pressure_fd < 0)
			pressure_fd = -1;
	}
	if (pressure_fd < 0)
		return 1.0;
	if (window_start != 0 &&
		!TimestampDifferenceExceeds(window_start, now, PRESSURE_WINDOW_MS))
		return last_share;
	if (!read_total(&total))
	{
		close(pressure_fd);
		pressure_fd = -1;
		last_share = 1.0;
		return 1.0;
	}
	if (window_start != 0 && now > window_start && total >= window_total)
		last_share = Min(1.0, (double) (total - window_total) / (double) (now - window_start));
	window_start = now;
	window_total = total;
	return last_share;
}

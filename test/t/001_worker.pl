# The background workers: the launcher, one worker per database that has the
# extension, partitions ahead, adoption of default-partition rows, retention,
# configuration reload, DROP EXTENSION / DROP DATABASE, other commands that
# need a database to themselves, terminated workers, a crash, and a server
# that does not preload the library.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

# events of 2001 get partitions of their own (the default window of late
# partitions is 100 partitions: docs/streams.md, the partition bound)
my $node = StreamEventsTest::new_node('worker', q{max_connections = 20},
	q{stream_events.max_partitions_behind = 100000});
$node->start;

# pid of the stream_events worker of a database ('' when there is none)
sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		qq{SELECT string_agg(pid::text, ',') FROM pg_stat_activity
		   WHERE backend_type = 'stream_events worker' AND datname = '$db'});
}

sub wait_for_worker
{
	my ($db, $what) = @_;
	ok( $node->poll_query_until(
			'postgres',
			qq{SELECT count(*) = 1 FROM pg_stat_activity
			   WHERE backend_type = 'stream_events worker' AND datname = '$db'}),
		"$what: a stream_events worker runs in database $db");
}

sub wait_for_no_worker
{
	my ($db, $what) = @_;
	ok( $node->poll_query_until(
			'postgres',
			qq{SELECT count(*) = 0 FROM pg_stat_activity
			   WHERE backend_type = 'stream_events worker' AND datname = '$db'}),
		"$what: no stream_events worker left in database $db");
}

# Name of the partition of $stream (daily) that holds the given timestamptz expression.
sub partition_exists_sql
{
	my ($stream, $ts_expr) = @_;
	return qq{SELECT to_regclass(stream._partition_name('$stream'::regclass,
	            stream._bucket_start($ts_expr, '1 day'), '1 day')) IS NOT NULL};
}

############################################################################
# (a) CREATE EXTENSION starts a worker in that database, without a restart.

ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'stream_events launcher'}),
	'the launcher runs after start');

$node->safe_psql('postgres', 'CREATE DATABASE db1');
$node->safe_psql('postgres', 'CREATE DATABASE db2');
is(worker_pid('db1'), '', 'no worker in a database without the extension');

$node->safe_psql('db1', 'CREATE EXTENSION stream_events');
wait_for_worker('db1', 'after CREATE EXTENSION');
my $pid1 = worker_pid('db1');
like($pid1, qr/^\d+$/, 'exactly one worker in db1');
is( $node->safe_psql(
		'postgres',
		"SELECT application_name FROM pg_stat_activity WHERE pid = $pid1"),
	'stream_events worker',
	'the worker names itself in application_name');
is( $node->safe_psql(
		'db1',
		q{SELECT state || ' ' || pid FROM stream.worker_status() WHERE datname = 'db1'}),
	"running $pid1",
	'stream.worker_status() shows the worker of db1 running with its pid');
ok( $node->poll_query_until(
		'db1',
		q{SELECT runs >= 2 AND last_error IS NULL FROM stream.worker_status()
		  WHERE datname = 'db1'}),
	'the worker of db1 runs maintenance repeatedly without error');

$node->safe_psql('db2', 'CREATE EXTENSION stream_events');
wait_for_worker('db2', 'second database');
my $pid2 = worker_pid('db2');
isnt($pid2, $pid1, 'db2 has a worker of its own');
is( $node->safe_psql(
		'db1',
		q{SELECT string_agg(datname || ':' || state, ',' ORDER BY datname)
		  FROM stream.worker_status() WHERE datname IN ('db1', 'db2')}),
	'db1:running,db2:running',
	'stream.worker_status() lists both workers');
is(worker_pid('db1'), $pid1, 'the worker of db1 was not restarted meanwhile');

############################################################################
# (b) Partitions ahead, re-created when dropped; adoption of default rows.

$node->safe_psql('db1', q{SELECT stream.create_stream('clicks')});

# the current partition and three after it (stream_events.partitions_ahead = 3)
my $ahead_sql = q{SELECT bool_and(to_regclass(stream._partition_name('clicks'::regclass,
                    stream._bucket_start(now() + make_interval(days => d), '1 day'), '1 day')) IS NOT NULL)
                  FROM generate_series(0, 3) d};
ok($node->poll_query_until('db1', $ahead_sql),
	'the current partition and 3 ahead exist');

# A partition cannot be dropped by hand (append-only, src/stream/ddl_guard.c);
# the worker creates the ones a larger partitions_ahead asks for, each
# attached with the stream's triggers.
my $ahead2 = $node->safe_psql('db1',
	q{SELECT stream._partition_name('clicks'::regclass,
	     stream._bucket_start(now() + interval '2 days', '1 day'), '1 day')});
my ($dret, $dout, $derr) = $node->psql('db1', "DROP TABLE $ahead2");
isnt($dret, 0, "DROP TABLE $ahead2 (a partition of a stream) is refused");
like($derr, qr/cannot drop partition/, '... as a partition of a stream');
my $victim = $node->safe_psql('db1',
	q{SELECT stream._partition_name('clicks'::regclass,
	     stream._bucket_start(now() + interval '5 days', '1 day'), '1 day')});
is($node->safe_psql('db1', "SELECT to_regclass('$victim') IS NULL"), 't',
	"$victim (5 days ahead) does not exist yet");
$node->safe_psql('postgres', q{ALTER SYSTEM SET stream_events.partitions_ahead = 5});
$node->reload;
ok( $node->poll_query_until('db1', "SELECT to_regclass('$victim') IS NOT NULL"),
	"the worker creates $victim once partitions_ahead = 5");
is( $node->safe_psql(
		'db1',
		qq{SELECT inhparent::regclass::text FROM pg_inherits
		   WHERE inhrelid = '$victim'::regclass}),
	'clicks',
	're-created partition is attached to the stream');
is( $node->safe_psql(
		'db1',
		qq{SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger
		   WHERE tgrelid = '$victim'::regclass}),
	'stream_events_append_only,stream_events_ingest,stream_events_no_truncate',
	're-created partition has the stream triggers');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET stream_events.partitions_ahead});
$node->reload;

# Events far in the past and far in the future land in the default partition;
# past ones within stream_events.max_partitions_behind are adopted into
# partitions of their own, untouched; those after the partitions kept ahead
# stay in the default partition, counted (the partition bound).
$node->safe_psql(
	'db1', q{
	INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
	SELECT md5('old' || i)::uuid, 'page_view',
	       timestamptz '2001-03-04 10:00:00+00' + make_interval(hours => i), 'u' || i
	FROM generate_series(1, 30) i;
	INSERT INTO clicks (event_id, event_name, occurred_at, user_id)
	SELECT md5('future' || i)::uuid, 'page_view',
	       now() + interval '2 years' + make_interval(mins => i), 'u' || i
	FROM generate_series(1, 20) i;
	INSERT INTO clicks (event_id, event_name, user_id)
	SELECT md5('now' || i)::uuid, 'page_view', 'u' || i
	FROM generate_series(1, 10) i;
});
my $snapshot_sql = q{SELECT count(*) || ':' ||
        md5(string_agg(event_id || event_name || occurred_at || received_at || user_id,
                       ',' ORDER BY event_id)) FROM clicks};
my $before = $node->safe_psql('db1', $snapshot_sql);
like($before, qr/^60:/, '60 events stored');

ok( $node->poll_query_until(
		'db1', q{SELECT count(*) = 20 AND bool_and(occurred_at > now() + interval '1 year')
		         FROM clicks_default}),
	'the worker adopts the past events; the far-future ones stay in the default partition');
is($node->safe_psql('db1', $snapshot_sql),
	$before, 'adoption keeps every event unchanged (ids, times, received_at)');
is( $node->safe_psql(
		'db1',
		q{SELECT count(*) FROM clicks
		  WHERE tableoid = to_regclass('clicks_p20010304')
		    AND occurred_at < '2001-03-05 00:00:00+00'}),
	'13',
	'events of 2001-03-04 are in partition clicks_p20010304');
is( $node->safe_psql(
		'db1',
		q{SELECT count(*) FROM clicks
		  WHERE tableoid = to_regclass('clicks_p20010305')}),
	'17',
	'events of 2001-03-05 are in partition clicks_p20010305');
is( $node->safe_psql(
		'db1',
		q{SELECT default_partition_events FROM stream.stream_list WHERE stream = 'clicks'}),
	'20',
	'far-future events are counted in stream_list.default_partition_events');
is( $node->safe_psql(
		'db1',
		q{SELECT count(*) FROM pg_inherits WHERE inhparent = 'clicks'::regclass
		  AND inhrelid::regclass::text > stream._partition_name('clicks'::regclass,
		          stream._bucket_start(now() + interval '1 year', '1 day'), '1 day')}),
	'0',
	'no partition was created for them');
is( $node->safe_psql(
		'db1',
		q{SELECT count(*) FROM pg_inherits i
		  JOIN pg_class c ON c.oid = i.inhrelid
		  WHERE i.inhparent = 'clicks'::regclass
		    AND c.relname IN ('clicks_p20010304', 'clicks_p20010305')}),
	'2',
	'adopted partitions are attached to the stream');

############################################################################
# (c) Retention: old partitions are dropped, newer ones kept.

$node->safe_psql('db1',
	q{SELECT stream.create_stream('short_lived', retention => '2 days')});
$node->safe_psql(
	'db1', q{
	INSERT INTO short_lived (event_name, occurred_at)
	SELECT 'old', now() - interval '10 days' FROM generate_series(1, 5);
	INSERT INTO short_lived (event_name, occurred_at)
	SELECT 'yesterday', now() - interval '1 day' FROM generate_series(1, 3);
	INSERT INTO short_lived (event_name)
	SELECT 'today' FROM generate_series(1, 4);
});
my $old_part = $node->safe_psql('db1',
	q{SELECT stream._partition_name('short_lived'::regclass,
	     stream._bucket_start(now() - interval '10 days', '1 day'), '1 day')});
ok( $node->poll_query_until(
		'db1',
		q{SELECT count(*) = 0 FROM short_lived WHERE event_name = 'old'}),
	'events older than the retention are gone');
is($node->safe_psql('db1', "SELECT to_regclass('$old_part') IS NULL"),
	't', "partition $old_part (10 days old) is dropped");
is($node->safe_psql('db1', 'SELECT count(*) FROM short_lived_default'),
	'0', 'nothing is left in the default partition');
is( $node->safe_psql(
		'db1',
		q{SELECT string_agg(event_name || '=' || n, ',' ORDER BY event_name)
		  FROM (SELECT event_name, count(*) AS n FROM short_lived GROUP BY 1) s}),
	'today=4,yesterday=3',
	'events within the retention are kept');
is( $node->safe_psql(
		'db1',
		q{SELECT to_regclass(stream._partition_name('short_lived'::regclass,
		     stream._bucket_start(now() - interval '1 day', '1 day'), '1 day')) IS NOT NULL}),
	't',
	"yesterday's partition is kept");
ok( $node->poll_query_until(
		'db1',
		q{SELECT bool_and(to_regclass(stream._partition_name('short_lived'::regclass,
		     stream._bucket_start(now() + make_interval(days => d), '1 day'), '1 day')) IS NOT NULL)
		  FROM generate_series(0, 3) d}),
	'partitions ahead of a stream with retention exist');

############################################################################
# (d) Configuration reload.

$pid1 = worker_pid('db1');
my $runs_before = $node->safe_psql('db1',
	q{SELECT runs FROM stream.worker_status() WHERE datname = 'db1'});
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET stream_events.naptime = 2; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', 'SHOW stream_events.naptime', '2s'),
	'a new session sees stream_events.naptime = 2s after reload');
ok( $node->poll_query_until(
		'db1',
		qq{SELECT runs >= $runs_before + 2 AND last_error IS NULL
		   FROM stream.worker_status() WHERE datname = 'db1'}),
	'the worker keeps running maintenance after the reload');
is(worker_pid('db1'), $pid1, 'the worker was not restarted by the reload');
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'stream_events launcher'}),
	'the launcher is still there after the reload');
$node->safe_psql('postgres',
	q{ALTER SYSTEM RESET stream_events.naptime; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', 'SHOW stream_events.naptime', '1s'),
	'stream_events.naptime back to 1s');

############################################################################
# (e) DROP EXTENSION stops the worker; CREATE EXTENSION brings it back.

$pid2 = worker_pid('db2');
$node->safe_psql('db2', 'DROP EXTENSION stream_events');
wait_for_no_worker('db2', 'after DROP EXTENSION');
is( $node->safe_psql(
		'db1',
		q{SELECT count(*) FROM stream.worker_status()
		  WHERE datname = 'db2' AND state IN ('starting', 'running')}),
	'0',
	'stream.worker_status() shows no running worker for db2');
is(worker_pid('db1'), $pid1, 'the worker of db1 is not affected');

$node->safe_psql('db2', 'CREATE EXTENSION stream_events');
wait_for_worker('db2', 'after CREATE EXTENSION again');
isnt(worker_pid('db2'), $pid2, 'it is a new worker process');
ok( $node->poll_query_until(
		'db2',
		q{SELECT state = 'running' AND runs >= 1 FROM stream.worker_status()
		  WHERE datname = 'db2'}),
	'the new worker of db2 runs maintenance');

############################################################################
# (f) DROP DATABASE of a database with a running worker.

my ($ret, $stdout, $stderr) = (0, '', '');
$ret = $node->psql('postgres', 'DROP DATABASE db2',
	stdout => \$stdout, stderr => \$stderr);
is($ret, 0, 'DROP DATABASE of a database with a running worker succeeds');
is($stderr, '', 'DROP DATABASE reports no error') or diag($stderr);
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_database WHERE datname = 'db2'}),
	'0', 'db2 is gone');
wait_for_no_worker('db2', 'after DROP DATABASE');
is(worker_pid('db1'), $pid1, 'the worker of db1 survives DROP DATABASE db2');

# a database re-created with the same name gets a worker again
$node->safe_psql('postgres', 'CREATE DATABASE db2');
$node->safe_psql('db2', 'CREATE EXTENSION stream_events');
wait_for_worker('db2', 'database re-created after DROP DATABASE');

############################################################################
# (f2) Other commands that need no other session in the database: CREATE
# DATABASE ... TEMPLATE and ALTER DATABASE ... RENAME.  The worker steps
# aside only for a DROP DATABASE that would pass its checks (the utility
# hook must not act before the command's own permission checks); these
# fail while it is connected, with a HINT naming it, and succeed once a
# superuser terminated it (it comes back after naptime).

# Waits up to $secs seconds for $sql to return 't' (what is awaited takes a
# naptime, 1 s, when it works).
sub wait_for
{
	my ($db, $sql, $secs) = @_;
	my $deadline = time() + $secs;
	my ($o, $e);
	while (time() < $deadline)
	{
		($o, $e) = ('', '');
		$node->psql($db, $sql, stdout => \$o, stderr => \$e);
		return 1 if $o eq 't';
		usleep(100_000);
	}
	diag("waited ${secs}s for: $sql\nlast output: $o\nstderr: $e");
	return 0;
}

$node->safe_psql('postgres', 'CREATE DATABASE db3');
$node->safe_psql('db3', 'CREATE EXTENSION stream_events');
wait_for_worker('db3', 'third database');

# Runs $sql in postgres right after terminating db's worker.
sub after_terminating_worker
{
	my ($db, $sql) = @_;
	my $pid = worker_pid($db);
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
	my ($o, $e) = ('', '');
	my $r = $node->psql('postgres', $sql, stdout => \$o, stderr => \$e);
	diag($e) if $r != 0;
	return $r;
}

($stdout, $stderr) = ('', '');
$ret = $node->psql('postgres', 'CREATE DATABASE db3_copy TEMPLATE db3',
	stdout => \$stdout, stderr => \$stderr);
isnt($ret, 0, 'CREATE DATABASE ... TEMPLATE of a database whose worker is connected fails');
like($stderr, qr/HINT:.*stream_events worker \(PID \d+\).*pg_terminate_backend\(\d+\)/s,
	'... with a HINT naming the worker and how to stop it');
is(after_terminating_worker('db3', 'CREATE DATABASE db3_copy TEMPLATE db3'),
	0, 'CREATE DATABASE ... TEMPLATE succeeds right after the worker was terminated');
ok( wait_for(
		'postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'stream_events worker' AND datname = 'db3_copy'},
		30),
	'the copy gets a worker of its own');
wait_for_worker('db3', 'after CREATE DATABASE ... TEMPLATE db3');

($stdout, $stderr) = ('', '');
$ret = $node->psql('postgres', 'ALTER DATABASE db3 RENAME TO db3_renamed',
	stdout => \$stdout, stderr => \$stderr);
isnt($ret, 0, 'ALTER DATABASE ... RENAME of a database whose worker is connected fails');
like($stderr, qr/HINT:.*pg_terminate_backend/s, '... with the HINT');
is(after_terminating_worker('db3', 'ALTER DATABASE db3 RENAME TO db3_renamed'),
	0, 'ALTER DATABASE ... RENAME succeeds right after the worker was terminated');
wait_for_worker('db3_renamed', 'after ALTER DATABASE ... RENAME');

############################################################################
# (f3) A worker or the launcher ended by pg_terminate_backend (what a DBA does
# to a stuck process) comes back: otherwise partitions stop being created
# and retention stops, silently, until the server restarts.

$pid1 = worker_pid('db1');
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid1)"),
	't', 'the worker of db1 is terminated');
ok( $node->poll_query_until(
		'postgres',
		qq{SELECT count(*) = 1 FROM pg_stat_activity
		   WHERE backend_type = 'stream_events worker' AND datname = 'db1'
		     AND pid <> $pid1}),
	'a new worker starts in db1 after the old one was terminated');

my $launcher = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'stream_events launcher'});
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)"),
	't', 'the launcher is terminated');
ok( $node->poll_query_until(
		'postgres',
		qq{SELECT count(*) = 1 FROM pg_stat_activity
		   WHERE backend_type = 'stream_events launcher' AND pid <> $launcher}),
	'a new launcher starts after the old one was terminated');
# The new launcher handles requests in order: once it has started the worker
# of a database created now, it has dealt with the databases it found at its
# start, and must not have started a second worker next to a running one.
$node->safe_psql('postgres', 'CREATE DATABASE db4');
$node->safe_psql('db4', 'CREATE EXTENSION stream_events');
wait_for_worker('db4', 'CREATE EXTENSION after the launcher was restarted');
{
	# A new launcher keeps the slots of workers that are still running.
	is( $node->safe_psql(
			'postgres',
			q{SELECT string_agg(datname || ':' || n, ',' ORDER BY datname)
			  FROM (SELECT datname, count(*) AS n FROM pg_stat_activity
			        WHERE backend_type = 'stream_events worker' GROUP BY 1) w
			  WHERE n > 1}),
		'',
		'no database has two workers after the launcher was restarted');
	is( $node->safe_psql(
			'db1',
			q{SELECT string_agg(a.datname || ':' || a.pid, ',') FROM pg_stat_activity a
			  WHERE a.backend_type = 'stream_events worker'
			    AND NOT EXISTS (SELECT 1 FROM stream.worker_status() w WHERE w.pid = a.pid)}),
		'',
		'stream.worker_status() knows every running worker');
}

############################################################################
# (g) Crash: immediate stop, start again.

$node->safe_psql(
	'db1', q{
	SELECT stream.create_stream('crashy');
	INSERT INTO crashy (event_id, event_name)
	SELECT md5('crash' || i)::uuid, 'purchase' FROM generate_series(1, 200) i;
});
my $crashy_before = $node->safe_psql('db1',
	q{SELECT count(*) || ':' || md5(string_agg(event_id || ':' || received_at, ',' ORDER BY event_id))
	  FROM crashy});

# A transaction that is open at the crash: its events must vanish and their
# dedup keys with them.
my ($in, $out, $err) = ('', '', '');
my $timer = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
my $h = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('db1'), '-f', '-' ],
	'<', \$in, '>', \$out, '2>', \$err, $timer);
$in .= q{BEGIN;
INSERT INTO crashy (event_id, event_name)
SELECT md5('uncommitted' || i)::uuid, 'purchase' FROM generate_series(1, 10) i;
SELECT 'inserted-' || count(*) FROM crashy;
};
$h->pump until $out =~ /inserted-210/ || $timer->is_expired;
like($out, qr/inserted-210/, 'an open transaction holds 10 uncommitted events');

$node->stop('immediate');
$h->kill_kill;
$node->start;

ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'stream_events launcher'}),
	'the launcher is back after the crash');
wait_for_worker('db1', 'after the crash');
wait_for_worker('db2', 'after the crash');
wait_for_worker('db3_renamed', 'after the crash');
ok( $node->poll_query_until(
		'db1',
		q{SELECT state = 'running' AND runs >= 1 AND last_error IS NULL
		  FROM stream.worker_status() WHERE datname = 'db1'}),
	'the worker of db1 runs maintenance after the crash');

is( $node->safe_psql(
		'db1',
		q{SELECT count(*) || ':' || md5(string_agg(event_id || ':' || received_at, ',' ORDER BY event_id))
		  FROM crashy}),
	$crashy_before,
	'every event committed before the crash is there, unchanged, and no uncommitted one');

# retries of committed events are dropped
my $dups_before = $node->safe_psql('db1',
	q{SELECT duplicates FROM stream.stats WHERE stream = 'crashy'});
is( $node->safe_psql(
		'db1', q{
	WITH ins AS (
	    INSERT INTO crashy (event_id, event_name)
	    SELECT md5('crash' || i)::uuid, 'purchase' FROM generate_series(1, 200) i
	    RETURNING 1)
	SELECT count(*) FROM ins}),
	'0',
	'retries of events committed before the crash are dropped');
is($node->safe_psql('db1', 'SELECT count(*) FROM crashy'),
	'200', 'still 200 events after the retries');
is( $node->safe_psql(
		'db1',
		qq{SELECT duplicates - $dups_before FROM stream.stats WHERE stream = 'crashy'}),
	'200',
	'stream.stats counts the 200 retries as duplicates');
is( $node->safe_psql(
		'db1', q{SELECT (stream.ingest('crashy',
		    jsonb_build_array(jsonb_build_object('event_id', md5('crash1')::uuid,
		                                         'event_name', 'purchase')))).duplicates}),
	'1',
	'stream.ingest also drops a retry of a pre-crash event');

# events that were not committed at the crash are accepted when sent again
is( $node->safe_psql(
		'db1', q{
	WITH ins AS (
	    INSERT INTO crashy (event_id, event_name)
	    SELECT md5('uncommitted' || i)::uuid, 'purchase' FROM generate_series(1, 10) i
	    RETURNING 1)
	SELECT count(*) FROM ins}),
	'10',
	'events of the transaction lost in the crash are accepted when sent again');
is($node->safe_psql('db1', 'SELECT count(*) FROM crashy'),
	'210', '210 events now');

$node->stop;

############################################################################
# (h) Without shared_preload_libraries: no worker, but streams work.

my $plain = PostgreSQL::Test::Cluster->new('nopreload');
$plain->init(allows_streaming => 'logical');
$plain->append_conf('postgresql.conf', "stream_events.naptime = 1\n");
$plain->start;

# Runs SQL on the node without the preload; returns its output, or the error
# text, so that a failure shows in the test instead of ending the script.
sub plain_query
{
	my ($sql) = @_;
	my ($o, $e) = ('', '');
	my $rc = $plain->psql('postgres', $sql, stdout => \$o, stderr => \$e);
	return $rc == 0 ? $o : "failed ($rc): $e";
}

is( plain_query(
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'stream_events%'}),
	'0',
	'no stream_events background process without shared_preload_libraries');

($stdout, $stderr) = ('', '');
$ret = $plain->psql('postgres', 'CREATE EXTENSION stream_events',
	stdout => \$stdout, stderr => \$stderr);
is($ret, 0, 'CREATE EXTENSION succeeds without shared_preload_libraries')
  or diag($stderr);
like(
	$stderr,
	qr/WARNING:  stream_events is not loaded through shared_preload_libraries, so its background worker is off/,
	'CREATE EXTENSION warns that the worker is off');
like($stderr, qr/HINT:  Add stream_events to shared_preload_libraries/,
	'the warning says what to do');
unlike($stderr, qr/ERROR|FATAL/, 'no error');
is(plain_query('SELECT count(*) FROM stream.worker_status()'),
	'0', 'stream.worker_status() is empty');

is(plain_query(q{SELECT stream.create_stream('clicks')}),
	'clicks', 'create_stream works');
is( plain_query(
		q{SELECT bool_and(to_regclass(stream._partition_name('clicks'::regclass,
		     stream._bucket_start(now() + make_interval(days => d), '1 day'), '1 day')) IS NOT NULL)
		  FROM generate_series(0, 3) d}),
	't',
	'create_stream creates the partitions ahead itself');
is( plain_query(
		q{WITH ins AS (
		    INSERT INTO clicks (event_id, event_name, occurred_at)
		    VALUES ('00000000-0000-7000-8000-000000000001', 'page_view', now()),
		           ('00000000-0000-7000-8000-000000000002', 'page_view', now() - interval '30 days')
		    RETURNING 1)
		  SELECT count(*) FROM ins}),
	'2',
	'INSERT works');
is( plain_query(
		q{WITH ins AS (
		    INSERT INTO clicks (event_id, event_name)
		    VALUES ('00000000-0000-7000-8000-000000000001', 'page_view')
		    RETURNING 1)
		  SELECT count(*) FROM ins}),
	'0',
	'a retried event is dropped');
is( plain_query(
		q{SELECT accepted || '/' || duplicates || '/' || quarantined FROM stream.ingest('clicks',
		  '[{"event_id": "00000000-0000-7000-8000-000000000003", "event_name": "purchase"},
		    {"event_id": "00000000-0000-7000-8000-000000000002", "event_name": "page_view"},
		    {"type": "track", "event": "signup", "userId": "u1", "messageId": "m-1"}]')}),
	'2/1/0',
	'stream.ingest works');
is(plain_query('SELECT count(*) FROM clicks'),
	'4', 'four events stored');
unlike(plain_query('SELECT * FROM stream.stats'),
	qr/^failed/, 'stream.stats can be read');
is(plain_query(q{SELECT rows_moved FROM stream.maintain('clicks')}),
	'1',
	'stream.maintain() run by hand adopts the event of the default partition');
is(plain_query('SELECT count(*) FROM clicks_default'),
	'0', 'default partition empty after stream.maintain()');

$plain->stop;

done_testing();
